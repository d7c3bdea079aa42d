"""Durable timers: deadlines an actor sets in its batch transaction and the runtime fires later.

An actor that waits (a decision waiting for its context, an action's retry-later, a grace period)
calls `batch.set_timer(key, due_at, payload)` while handling; the row is written in the same
transaction as the state that needs it. When it is due, the actor's runner opens a new transaction,
deletes the due rows (`DELETE ... RETURNING`, oldest first) and hands them to `Actor.on_timer`,
which may change state, emit and set new timers; everything commits together. A crash before the
commit rolls the delete back and the timer fires again: a deadline is never lost, and its effects
are applied once. Time is wall-clock (processing time), in epoch seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from ._pgcolumns import pack_columns, split_sql


class Timer(msgspec.Struct, frozen=True):
    key: str
    due_at: float  # epoch seconds
    payload: bytes = b""


# $3, $4: keys and due times (packed text); $5, $6: separator and NULL marker; $7: payloads.
_SET_COLS = split_sql(2, first=3, casts=["text", "float8"])
_SET_SQL = f"""
INSERT INTO rt_timers (component, platform_run_id, timer_key, due_at, payload)
SELECT $1, $2, t.key, to_timestamp(t.due), t.payload
  FROM unnest({_SET_COLS[0]}, {_SET_COLS[1]}, $7::bytea[]) AS t(key, due, payload)
    ON CONFLICT (component, platform_run_id, timer_key)
    DO UPDATE SET due_at = EXCLUDED.due_at, payload = EXCLUDED.payload
"""
_CANCEL_SQL = "DELETE FROM rt_timers WHERE component = $1 AND platform_run_id = $2 AND timer_key = ANY($3::text[])"
_TAKE_DUE_SQL = """
DELETE FROM rt_timers WHERE (component, platform_run_id, timer_key) IN (
    SELECT component, platform_run_id, timer_key FROM rt_timers
     WHERE component = $1 AND platform_run_id = $2 AND due_at <= now()
     ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING timer_key, extract(epoch FROM due_at)::float8 AS due, payload
"""
_NEXT_DUE_SQL = """
SELECT extract(epoch FROM min(due_at))::float8 FROM rt_timers WHERE component = $1 AND platform_run_id = $2
"""


async def save_timers(conn: Any, component: str, platform_run_id: str, set_: Sequence[Timer],
                      cancelled: Sequence[str]) -> None:
    """Cancel, then set (a key both cancelled and set in one batch ends up set)."""
    if cancelled:
        await conn.execute(_CANCEL_SQL, component, platform_run_id, list(cancelled))
    if set_:
        latest: dict[str, Timer] = {t.key: t for t in set_}  # the last setting of a key wins
        timers = list(latest.values())
        await conn.execute(_SET_SQL, component, platform_run_id,
                           *pack_columns([[t.key for t in timers], [repr(t.due_at) for t in timers]]),
                           [t.payload for t in timers])


async def take_due(conn: Any, component: str, platform_run_id: str, limit: int) -> list[Timer]:
    """Delete and return up to `limit` due timers, oldest first (undone if the transaction rolls back)."""
    rows = await conn.fetch(_TAKE_DUE_SQL, component, platform_run_id, limit)
    timers = [Timer(r["timer_key"], r["due"], bytes(r["payload"])) for r in rows]
    timers.sort(key=lambda t: (t.due_at, t.key))
    return timers


async def next_due(conn: Any, component: str, platform_run_id: str) -> float | None:
    value = await conn.fetchval(_NEXT_DUE_SQL, component, platform_run_id)
    return float(value) if value is not None else None


def epoch(moment: datetime | float) -> float:
    """Epoch seconds from an aware datetime (or pass a float through)."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return float(moment)
