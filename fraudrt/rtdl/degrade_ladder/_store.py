"""The ladder's writes: a posture change (append-only, with a NOTIFY) and the per-run heartbeat."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from ._ladder import LadderState

NOTIFY_CHANNEL: Final = "dl_posture"

_INSERT_CHANGE: Final = """
INSERT INTO dl_posture_changes (platform_run_id, posture_seq, mode, previous_mode, reason, reasons, signals,
                                policy_digest, decided_at)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)
"""
_HEARTBEAT: Final = """
INSERT INTO dl_heartbeat AS h (platform_run_id, posture_seq, mode, baseline, better_since, better_worst, ticks,
                               ticked_at)
VALUES ($1, $2, $3, $4, $5, $6, 1, clock_timestamp())
ON CONFLICT (platform_run_id) DO UPDATE SET posture_seq = EXCLUDED.posture_seq, mode = EXCLUDED.mode,
    baseline = EXCLUDED.baseline, better_since = EXCLUDED.better_since, better_worst = EXCLUDED.better_worst,
    ticks = h.ticks + 1, ticked_at = EXCLUDED.ticked_at
"""
_LOAD: Final = """
SELECT h.posture_seq, h.mode, h.better_since, h.better_worst,
       (SELECT c.mode FROM dl_posture_changes c WHERE c.platform_run_id = $1 ORDER BY c.posture_seq DESC LIMIT 1)
           AS last_change_mode,
       (SELECT max(c.posture_seq) FROM dl_posture_changes c WHERE c.platform_run_id = $1) AS last_seq
  FROM (SELECT $1::text AS platform_run_id) q LEFT JOIN dl_heartbeat h ON h.platform_run_id = q.platform_run_id
"""


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


async def load_state(conn: Any, platform_run_id: str) -> LadderState | None:
    """The posture the ladder held for this run (None: it never ran), from the changes it appended."""
    row = await conn.fetchrow(_LOAD, platform_run_id)
    if row is None or row["last_seq"] is None:
        return None
    since = row["better_since"].timestamp() if row["better_since"] is not None else None
    # The change log is the record; the heartbeat only adds the quiet period in progress.
    same = row["posture_seq"] == row["last_seq"]
    return LadderState(mode=row["last_change_mode"], posture_seq=row["last_seq"],
                       better_since=since if same else None, better_worst=row["better_worst"] if same else None)


async def append_change(conn: Any, platform_run_id: str, *, posture_seq: int, mode: str, previous: str | None,
                        reason: str, reasons: Sequence[str], signals: dict[str, Any], policy_digest: str,
                        decided_at: float) -> None:
    """Append one posture change and wake the run's waiters (delivered at commit)."""
    await conn.execute(_INSERT_CHANGE, platform_run_id, posture_seq, mode, previous, reason, list(reasons),
                       msgspec.json.encode(signals).decode(), policy_digest, _ts(decided_at))
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, platform_run_id)


async def heartbeat(conn: Any, platform_run_id: str, state: LadderState, baseline: str) -> None:
    await conn.execute(_HEARTBEAT, platform_run_id, state.posture_seq, state.mode, baseline,
                       _ts(state.better_since), state.better_worst)


async def set_posture(conn: Any, platform_run_id: str, mode: str, *, reason: str, policy_digest: str,
                      decided_at: float) -> int:
    """Append a change to `mode` by hand (an operator's override, a test's precondition) and beat the
    heartbeat, in `conn`'s transaction; returns the new posture_seq. A running ladder reads the held
    posture from the change log every tick, so it carries on from this one: it downshifts at once if
    its signals call for worse, and upshifts only after a quiet period of better signals."""
    seq = int(await conn.fetchval("SELECT coalesce(max(posture_seq), 0) + 1 FROM dl_posture_changes "
                                  "WHERE platform_run_id = $1", platform_run_id))
    previous = await conn.fetchval("SELECT mode FROM dl_posture_changes WHERE platform_run_id = $1 "
                                   "AND posture_seq = $2", platform_run_id, seq - 1)
    await append_change(conn, platform_run_id, posture_seq=seq, mode=mode, previous=previous, reason=reason,
                        reasons=[reason], signals={}, policy_digest=policy_digest, decided_at=decided_at)
    await heartbeat(conn, platform_run_id, LadderState(mode, seq), mode)
    return seq
