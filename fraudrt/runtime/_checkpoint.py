"""Checkpoints keyed by (component, stream, shard, platform_run_id), written in the batch's transaction.

Each row also carries the event-time watermark of what it covers, and every commit that moves a
checkpoint notifies `rt_checkpoints` (delivered at commit) so a progress fence in any process wakes
without polling (`_fence.py`).
"""

from __future__ import annotations

from typing import Any, Final

from ._bus import seq_key
from ._pgcolumns import pack_columns, split_sql

CheckpointKey = tuple[str, str]  # (stream, shard_id)

NOTIFY_CHANNEL: Final = "rt_checkpoints"

_COLS = split_sql(5, first=3, casts=["text", "text", "text", "bigint", "text"])
_SAVE_SQL = f"""
WITH up AS (
    INSERT INTO rt_checkpoints (actor, stream, shard_id, platform_run_id, sequence_number, records_total,
                                watermark_ts)
    SELECT $1, c.stream, c.shard_id, $2, c.seq, c.n, c.wm
      FROM unnest({", ".join(_COLS)}) AS c(stream, shard_id, seq, n, wm)
    ON CONFLICT (actor, stream, shard_id, platform_run_id) DO UPDATE
       SET sequence_number = EXCLUDED.sequence_number,
           records_total = rt_checkpoints.records_total + EXCLUDED.records_total,
           watermark_ts = greatest(rt_checkpoints.watermark_ts, EXCLUDED.watermark_ts),
           updated_at = now()
     WHERE rt_checkpoints.sequence_number::numeric < EXCLUDED.sequence_number::numeric
    RETURNING 1
)
SELECT pg_notify('{NOTIFY_CHANNEL}', $1 || ' ' || $2) FROM (SELECT count(*) FROM up) AS done
"""


async def load_checkpoints(conn: Any, actor: str, platform_run_id: str) -> dict[CheckpointKey, str]:
    rows = await conn.fetch(
        "SELECT stream, shard_id, sequence_number FROM rt_checkpoints WHERE actor = $1 AND platform_run_id = $2",
        actor, platform_run_id,
    )
    return {(r["stream"], r["shard_id"]): r["sequence_number"] for r in rows}


async def load_watermarks(conn: Any, actor: str, platform_run_id: str) -> dict[CheckpointKey, str]:
    rows = await conn.fetch(
        "SELECT stream, shard_id, watermark_ts FROM rt_checkpoints WHERE actor = $1 AND platform_run_id = $2 "
        "AND watermark_ts IS NOT NULL", actor, platform_run_id,
    )
    return {(r["stream"], r["shard_id"]): r["watermark_ts"] for r in rows}


async def save_checkpoints(conn: Any, actor: str, platform_run_id: str,
                           positions: dict[CheckpointKey, tuple[str, int]],
                           watermarks: dict[CheckpointKey, str] | None = None) -> None:
    """Upsert (stream, shard) -> (sequence, records counted); never moves a checkpoint backwards."""
    if not positions:
        return
    keys = list(positions)
    wm = watermarks or {}
    await conn.execute(_SAVE_SQL, actor, platform_run_id, *pack_columns([
        [k[0] for k in keys], [k[1] for k in keys], [positions[k][0] for k in keys],
        [str(positions[k][1]) for k in keys], [wm.get(k) for k in keys]]))


def is_after(sequence_number: str, checkpoint: str | None) -> bool:
    return checkpoint is None or seq_key(sequence_number) > seq_key(checkpoint)
