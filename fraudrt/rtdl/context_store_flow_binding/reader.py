"""The typed reader of CSFB state: the only way other components read it (DESIGN §10).

Every function takes a connection (or a pool) and a whole batch of keys, and runs one query: arrays
in, rows out. Answers are deterministic: a part is written once and never changes, so a COMPLETE
binding is the same however the streams interleaved; a WAITING one says which parts are missing.
There is no time window here: a binding is the flow's own context (its anchor and its arrival),
so "as of the flow's event time" is simply the binding itself.

Waiting for bindings (the Decision Fabric's join-wait), cheaply:

- `join_readiness(conn, run, flow_ids)`: status and missing parts only (no context columns);
- `completed_since(conn, run, cursor, limit)`: the flows whose binding completed after `cursor`,
  in completion order, and the cursor to ask from next time (an index range scan, so a waiter
  never re-reads what it already knows);
- at the commit of every batch that completed bindings, Postgres notifies channel
  `csfb_binding_complete` (`NOTIFY_CHANNEL`) with the run's platform_run_id as payload. With the
  runtime's fences: `await ctx.notifications.wait(NOTIFY_CHANNEL, run, check, timeout)` where
  `check` calls `completed_since` from the waiter's cursor (or `join_readiness` for its flows).
  Notifications are a wake-up, not the record: a waiter that reconnects reads `completed_since`
  from its own durable cursor, so nothing is missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from fraudrt.contracts import format_ts_utc

from ._model import (
    ArrivalEntitiesPart,
    ArrivalEventPart,
    FlowAnchorPart,
    FlowBinding,
    JoinFrame,
    JoinFrameKey,
    JoinReadiness,
    merchant_from_db,
    merchant_to_db,
    missing_parts,
    readiness_of,
)
from ._store import NOTIFY_CHANNEL, _probe

__all__ = [
    "NOTIFY_CHANNEL",
    "CompletedPage",
    "CsfbProgress",
    "completed_since",
    "fetch_join_frames",
    "join_readiness",
    "progress",
    "resolve_flow_binding",
    "state_digest",
]

_FRAME_COLS: Final = """
       f.arrival_event_id, f.arrival_ts, f.is_virtual, f.channel_group, f.zone_representation, f.tzid_primary,
       f.tzid_operational, f.entities_event_id, f.party_id AS e_party_id, f.account_id AS e_account_id,
       f.instrument_id AS e_instrument_id, f.device_id AS e_device_id, f.ip_id AS e_ip_id, f.session_id"""

# Per-key index probes (LATERAL ... LIMIT 1), so a batch never turns into a scan of the run's rows.
_BINDING_COLS: Final = ("b.flow_id, b.merchant_id, b.arrival_seq, b.anchor_event_id, b.ts, b.amount, b.party_id, "
                        "b.account_id, b.instrument_id, b.device_id, b.ip_id")
_FRAME_COLS_ALL: Final = ("f.merchant_id, f.arrival_event_id, f.arrival_ts, f.is_virtual, f.channel_group, "
                          "f.zone_representation, f.tzid_primary, f.tzid_operational, f.entities_event_id, "
                          "f.party_id, f.account_id, f.instrument_id, f.device_id, f.ip_id, f.session_id")
_BINDING: Final = _probe(_BINDING_COLS, "csfb_flow_bindings b", "b.flow_id = q.flow_id")
_FRAME_OF_BINDING: Final = _probe(_FRAME_COLS_ALL, "csfb_join_frames f",
                                  "f.merchant_id = b.merchant_id AND f.arrival_seq = b.arrival_seq")
_READY_BINDING: Final = _probe("b.flow_id, b.merchant_id, b.arrival_seq", "csfb_flow_bindings b",
                               "b.flow_id = q.flow_id")
_READY_FRAME: Final = _probe("f.arrival_event_id IS NOT NULL AS arrival, f.entities_event_id IS NOT NULL AS entities",
                             "csfb_join_frames f", "f.merchant_id = b.merchant_id AND f.arrival_seq = b.arrival_seq")

_RESOLVE_SQL: Final = f"""
SELECT q.flow_id, b.merchant_id, b.arrival_seq, b.anchor_event_id, b.ts, b.amount, b.party_id, b.account_id,
       b.instrument_id, b.device_id, b.ip_id, {_FRAME_COLS}
  FROM unnest($2::bigint[]) AS q(flow_id)
  LEFT JOIN LATERAL ({_BINDING}) b ON true
  LEFT JOIN LATERAL ({_FRAME_OF_BINDING}) f ON true
"""

_READINESS_SQL: Final = f"""
SELECT q.flow_id, b.flow_id IS NOT NULL AS anchor, coalesce(f.arrival, false) AS arrival,
       coalesce(f.entities, false) AS entities
  FROM unnest($2::bigint[]) AS q(flow_id)
  LEFT JOIN LATERAL ({_READY_BINDING}) b ON true
  LEFT JOIN LATERAL ({_READY_FRAME}) f ON true
"""

_FRAMES_SQL: Final = f"""
SELECT q.merchant_id, q.arrival_seq, f.merchant_id IS NOT NULL AS found, {_FRAME_COLS},
       ARRAY(SELECT b.flow_id FROM csfb_flow_bindings b
              WHERE b.platform_run_id = $1 AND b.merchant_id = q.merchant_id AND b.arrival_seq = q.arrival_seq
              ORDER BY b.flow_id) AS flow_ids
  FROM unnest($2::bigint[], $3::bigint[]) AS q(merchant_id, arrival_seq)
  LEFT JOIN LATERAL ({_probe(_FRAME_COLS_ALL, "csfb_join_frames f",
                             "f.merchant_id = q.merchant_id AND f.arrival_seq = q.arrival_seq")}) f ON true
"""

_COMPLETED_SQL: Final = """
SELECT flow_id, completion_seq FROM csfb_completions
 WHERE platform_run_id = $1 AND completion_seq > $2
 ORDER BY completion_seq LIMIT $3
"""

_PROGRESS_SQL: Final = """
SELECT bindings_total, join_hits, late_joins, frames_total, frames_complete, rejected_total, completion_cursor,
       wm_arrival_events, wm_arrival_entities, wm_flow_anchor
  FROM csfb_run_stats WHERE platform_run_id = $1
"""


def _ts(value: Any) -> str:
    return format_ts_utc(value)


def _arrival(row: Any) -> ArrivalEventPart | None:
    if row["arrival_event_id"] is None:
        return None
    return ArrivalEventPart(event_id=row["arrival_event_id"], ts_utc=_ts(row["arrival_ts"]),
                          is_virtual=row["is_virtual"], channel_group=row["channel_group"],
                          zone_representation=row["zone_representation"], tzid_primary=row["tzid_primary"],
                          tzid_operational=row["tzid_operational"])


def _entities(row: Any) -> ArrivalEntitiesPart | None:
    if row["entities_event_id"] is None:
        return None
    return ArrivalEntitiesPart(event_id=row["entities_event_id"], party_id=row["e_party_id"],
                           account_id=row["e_account_id"], instrument_id=row["e_instrument_id"],
                           device_id=row["e_device_id"], ip_id=row["e_ip_id"], session_id=row["session_id"])


async def resolve_flow_binding(conn: Any, platform_run_id: str, flow_ids: Sequence[int]) -> dict[int, FlowBinding]:
    """The binding of each flow (every requested id is a key): COMPLETE, or WAITING with its missing parts."""
    out: dict[int, FlowBinding] = {}
    for row in await conn.fetch(_RESOLVE_SQL, platform_run_id, list(flow_ids)):
        flow_id = row["flow_id"]
        if row["anchor_event_id"] is None:
            out[flow_id] = FlowBinding(flow_id=flow_id, readiness=readiness_of(("flow_anchor",)),
                                       missing=("flow_anchor",), key=None, anchor=None, arrival=None, entities=None)
            continue
        arrival, entities = _arrival(row), _entities(row)
        missing = missing_parts(True, arrival is not None, entities is not None)
        out[flow_id] = FlowBinding(
            flow_id=flow_id, readiness=readiness_of(missing), missing=missing,
            key=JoinFrameKey(merchant_from_db(row["merchant_id"]), row["arrival_seq"]),
            anchor=FlowAnchorPart(event_id=row["anchor_event_id"], ts_utc=_ts(row["ts"]), amount=row["amount"],
                              party_id=row["party_id"], account_id=row["account_id"],
                              instrument_id=row["instrument_id"], device_id=row["device_id"], ip_id=row["ip_id"]),
            arrival=arrival, entities=entities)
    return out


async def join_readiness(conn: Any, platform_run_id: str, flow_ids: Sequence[int]) -> dict[int, JoinReadiness]:
    """Only whether each flow's binding is complete, and which parts it waits for."""
    out: dict[int, JoinReadiness] = {}
    for row in await conn.fetch(_READINESS_SQL, platform_run_id, list(flow_ids)):
        missing = missing_parts(row["anchor"], row["arrival"], row["entities"])
        out[row["flow_id"]] = JoinReadiness(flow_id=row["flow_id"], readiness=readiness_of(missing), missing=missing)
    return out


async def fetch_join_frames(conn: Any, platform_run_id: str,
                            keys: Sequence[JoinFrameKey | tuple[int, int]]) -> dict[JoinFrameKey, JoinFrame | None]:
    """The join frame of each (merchant_id, arrival_seq), or None where no part of it has arrived."""
    wanted = [k if isinstance(k, JoinFrameKey) else JoinFrameKey(*k) for k in keys]
    rows = await conn.fetch(_FRAMES_SQL, platform_run_id, [merchant_to_db(k.merchant_id) for k in wanted],
                            [k.arrival_seq for k in wanted])
    out: dict[JoinFrameKey, JoinFrame | None] = {}
    for row in rows:
        key = JoinFrameKey(merchant_from_db(row["merchant_id"]), row["arrival_seq"])
        if not row["found"]:
            out[key] = None
            continue
        arrival, entities = _arrival(row), _entities(row)
        missing = missing_parts(True, arrival is not None, entities is not None)
        out[key] = JoinFrame(key=key, readiness=readiness_of(missing), missing=missing, arrival=arrival,
                             entities=entities, flow_ids=tuple(row["flow_ids"]))
    return out


class CompletedPage(msgspec.Struct, frozen=True, kw_only=True):
    """Flows whose binding completed after the cursor asked from, and the cursor to ask from next."""

    flow_ids: tuple[int, ...]
    cursor: int


async def completed_since(conn: Any, platform_run_id: str, cursor: int, limit: int = 10_000) -> CompletedPage:
    """Bindings completed after `cursor` (0: from the start of the run), oldest first, at most `limit`."""
    rows = await conn.fetch(_COMPLETED_SQL, platform_run_id, cursor, limit)
    return CompletedPage(flow_ids=tuple(r["flow_id"] for r in rows),
                         cursor=rows[-1]["completion_seq"] if rows else cursor)


class CsfbProgress(msgspec.Struct, frozen=True, kw_only=True):
    """CSFB's committed progress for a run: counters, completion cursor, event-time watermarks."""

    bindings_total: int
    join_hits: int
    late_joins: int
    join_misses: int
    frames_total: int
    frames_complete: int
    dead_letters: int
    completion_cursor: int
    watermarks: dict[str, str | None]


async def progress(conn: Any, platform_run_id: str) -> CsfbProgress:
    row = await conn.fetchrow(_PROGRESS_SQL, platform_run_id)
    if row is None:
        return CsfbProgress(bindings_total=0, join_hits=0, late_joins=0, join_misses=0, frames_total=0,
                            frames_complete=0, dead_letters=0, completion_cursor=0,
                            watermarks=dict.fromkeys(("arrival_events", "arrival_entities", "flow_anchor")))
    return CsfbProgress(
        bindings_total=row["bindings_total"], join_hits=row["join_hits"], late_joins=row["late_joins"],
        join_misses=row["bindings_total"] - row["join_hits"] - row["late_joins"],
        frames_total=row["frames_total"], frames_complete=row["frames_complete"], dead_letters=row["rejected_total"],
        completion_cursor=row["completion_cursor"],
        watermarks={k: (_ts(row[f"wm_{k}"]) if row[f"wm_{k}"] is not None else None)
                    for k in ("arrival_events", "arrival_entities", "flow_anchor")})


_DIGEST_SQL: Final = """
SELECT encode(sha256(convert_to(
         coalesce((SELECT string_agg(t::text, E'\\n' ORDER BY t.merchant_id, t.arrival_seq)
                     FROM (SELECT merchant_id, arrival_seq, arrival_event_id, arrival_ts AT TIME ZONE 'UTC',
                                  is_virtual, channel_group, zone_representation, tzid_primary, tzid_operational,
                                  entities_event_id, party_id, account_id, instrument_id, device_id, ip_id, session_id
                             FROM csfb_join_frames WHERE platform_run_id = $1) t), '')
         || E'\\n--\\n' ||
         coalesce((SELECT string_agg(t::text, E'\\n' ORDER BY t.flow_id)
                     FROM (SELECT flow_id, merchant_id, arrival_seq, anchor_event_id, ts AT TIME ZONE 'UTC', amount,
                                  party_id, account_id, instrument_id, device_id, ip_id
                             FROM csfb_flow_bindings WHERE platform_run_id = $1) t), ''),
       'UTF8')), 'hex')
"""


async def state_digest(conn: Any, platform_run_id: str) -> str:
    """sha256 over the run's frames and bindings, world fields and completeness only (not when or in
    which order they were applied): two runs of one world agree, whatever the interleaving or crashes.
    Reads the whole run: for tests and operators, never for a hot path."""
    value: str = await conn.fetchval(_DIGEST_SQL, platform_run_id)
    return value
