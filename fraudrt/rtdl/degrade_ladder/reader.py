"""The typed reader of the Degrade Ladder: the current posture of a run, and its history.

    posture = await current_posture(conn, platform_run_id)   # one statement, two index probes

The Decision Fabric calls it once per batch. `heartbeat_age_s` is how long ago the ladder last ticked
(measured by the database clock at the moment of the read, so it is right inside a long transaction
too): a ladder that stopped ticking is not vouching for its posture any more, and DF treats a posture
older than its limit as unknown. None: the ladder has not written a posture for the run yet; wait for
it on `NOTIFY_CHANNEL` (payload: the platform_run_id), which every change notifies at commit.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from fraudrt.contracts import format_ts_utc

from ._store import NOTIFY_CHANNEL

__all__ = ["NOTIFY_CHANNEL", "Posture", "PostureChange", "current_posture", "posture_history"]


class Posture(msgspec.Struct, frozen=True, kw_only=True):
    platform_run_id: str
    mode: str
    posture_seq: int
    decided_at_utc: str
    policy_digest: str
    reasons: tuple[str, ...]
    heartbeat_age_s: float | None


class PostureChange(msgspec.Struct, frozen=True, kw_only=True):
    posture_seq: int
    mode: str
    previous_mode: str | None
    reason: str
    reasons: tuple[str, ...]
    signals: dict[str, Any]
    policy_digest: str
    decided_at_utc: str


_CURRENT: Final = """
SELECT c.posture_seq, c.mode, c.decided_at, c.policy_digest, c.reasons,
       extract(epoch FROM clock_timestamp() - h.ticked_at)::float8 AS heartbeat_age
  FROM dl_posture_changes c
  LEFT JOIN dl_heartbeat h ON h.platform_run_id = c.platform_run_id
 WHERE c.platform_run_id = $1
 ORDER BY c.posture_seq DESC LIMIT 1
"""
_HISTORY: Final = """
SELECT posture_seq, mode, previous_mode, reason, reasons, signals::text AS signals, policy_digest, decided_at
  FROM dl_posture_changes WHERE platform_run_id = $1 ORDER BY posture_seq
"""


async def current_posture(conn: Any, platform_run_id: str) -> Posture | None:
    row = await conn.fetchrow(_CURRENT, platform_run_id)
    if row is None:
        return None
    return Posture(platform_run_id=platform_run_id, mode=row["mode"], posture_seq=row["posture_seq"],
                   decided_at_utc=format_ts_utc(row["decided_at"]), policy_digest=row["policy_digest"],
                   reasons=tuple(row["reasons"]), heartbeat_age_s=row["heartbeat_age"])


async def posture_history(conn: Any, platform_run_id: str) -> list[PostureChange]:
    """Every posture change of the run, oldest first (for reports, operators and tests)."""
    return [PostureChange(posture_seq=r["posture_seq"], mode=r["mode"], previous_mode=r["previous_mode"],
                          reason=r["reason"], reasons=tuple(r["reasons"]),
                          signals=msgspec.json.decode(r["signals"]), policy_digest=r["policy_digest"],
                          decided_at_utc=format_ts_utc(r["decided_at"]))
            for r in await conn.fetch(_HISTORY, platform_run_id)]
