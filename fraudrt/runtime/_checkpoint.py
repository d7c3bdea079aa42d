"""Checkpoints keyed by (actor, stream, shard, platform_run_id), written in the batch's transaction."""

from __future__ import annotations

from typing import Any

from ._bus import seq_key

CheckpointKey = tuple[str, str]  # (stream, shard_id)


async def load_checkpoints(conn: Any, actor: str, platform_run_id: str) -> dict[CheckpointKey, str]:
    rows = await conn.fetch(
        "SELECT stream, shard_id, sequence_number FROM rt_checkpoints WHERE actor = $1 AND platform_run_id = $2",
        actor, platform_run_id,
    )
    return {(r["stream"], r["shard_id"]): r["sequence_number"] for r in rows}


async def save_checkpoints(conn: Any, actor: str, platform_run_id: str,
                           positions: dict[CheckpointKey, tuple[str, int]]) -> None:
    """Upsert (stream, shard) -> (sequence, records counted); never moves a checkpoint backwards."""
    if not positions:
        return
    rows = [(actor, stream, shard, platform_run_id, seq, count)
            for (stream, shard), (seq, count) in positions.items()]
    await conn.executemany(
        """
        INSERT INTO rt_checkpoints (actor, stream, shard_id, platform_run_id, sequence_number, records_total)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (actor, stream, shard_id, platform_run_id) DO UPDATE
           SET sequence_number = EXCLUDED.sequence_number,
               records_total = rt_checkpoints.records_total + EXCLUDED.records_total,
               updated_at = now()
         WHERE rt_checkpoints.sequence_number::numeric < EXCLUDED.sequence_number::numeric
        """,
        rows,
    )


def is_after(sequence_number: str, checkpoint: str | None) -> bool:
    return checkpoint is None or seq_key(sequence_number) > seq_key(checkpoint)
