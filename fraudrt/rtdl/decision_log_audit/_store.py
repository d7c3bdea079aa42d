"""The Decision Log/Audit's statements: a batch costs a handful of them, whatever its size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from fraudrt.runtime import pack_columns, split_sql

from .._run_counters import counter_columns, counters_insert
from ._lineage import Chain

COUNTERS_TABLE: Final = "dla_run_counters"
# The run's counters, kept in COUNTERS_TABLE. lineage_unresolved_total goes up when a grace period
# ends with its chain incomplete and down when such a chain resolves late.
COUNTERS: Final = (
    "records.decision_response", "records.action_intent", "records.action_outcome", "duplicates_total",
    "mismatches_total", "conflicts_total", "rejected_total", "passed_over_total", "chains_total",
    "chains_resolved_total", "lineage_unresolved_total", "late_resolved_total", "audit_records_total",
    "segments_total", "segment_bytes_total", "decisions.APPROVE", "decisions.STEP_UP", "decisions.REVIEW",
    "decisions.DECLINE", "outcomes.EXECUTED", "outcomes.FAILED", "outcomes.DENIED")


class Link(NamedTuple):
    event_id: str
    event_type: str
    decision_id: str
    action_id: str | None
    content_hash: str
    segment_ref: str
    stream: str
    shard_id: str
    sequence_number: str


class ChainRow(NamedTuple):
    chain: Chain
    reasons: list[str]
    pins: str
    first_seen_at: float
    unresolved_at: float | None
    resolved_at: float | None


class Anomaly(NamedTuple):
    stream: str
    shard_id: str
    sequence_number: str
    kind: str
    event_id: str
    decision_id: str | None
    detail: str
    segment_ref: str | None


# Probes by primary key, one per input, never a plan that could scan the run (a prepared statement's
# generic plan is made while the tables are small, and `= ANY` then stayed a sequential scan).
_HELD_SQL: Final = """
SELECT l.event_id, l.content_hash FROM unnest($2::text[]) AS i(event_id)
 CROSS JOIN LATERAL (SELECT event_id, content_hash FROM dla_links
                      WHERE platform_run_id = $1 AND event_id = i.event_id) AS l
"""

_CHAIN_COLUMNS: Final = ("decision_id", "status", "source_event_id", "action", "admitted_at_utc", "decided_at_utc",
                         "decision_event_id", "decision_ref", "intent_ids", "intent_event_ids", "outcome_action_ids",
                         "outcome_ids", "outcome_statuses", "reasons", "pins", "first_seen_at", "unresolved_at",
                         "resolved_at")
_ARRAYS: Final = frozenset({"intent_ids", "intent_event_ids", "outcome_action_ids", "outcome_ids", "outcome_statuses",
                            "reasons"})
_TIMES: Final = frozenset({"first_seen_at", "unresolved_at", "resolved_at"})
_LOCK_SQL: Final = f"""
SELECT {", ".join(f"c.{c}" for c in _CHAIN_COLUMNS if c not in _TIMES)},
       extract(epoch FROM c.first_seen_at)::float8 AS first_seen_at,
       extract(epoch FROM c.unresolved_at)::float8 AS unresolved_at,
       extract(epoch FROM c.resolved_at)::float8 AS resolved_at
  FROM unnest($2::text[]) AS i(decision_id)
 CROSS JOIN LATERAL (SELECT * FROM dla_chains c WHERE c.platform_run_id = $1 AND c.decision_id = i.decision_id
                        FOR UPDATE) AS c
"""


def _null_of(column: str) -> str:
    kind = "text[]" if column in _ARRAYS else "float8" if column in _TIMES else "text"
    return f"NULL::{kind} AS {column}"


_CHAIN_OUT: Final = [c for c in _CHAIN_COLUMNS if c not in _TIMES] + [c for c in _CHAIN_COLUMNS if c in _TIMES]
# A batch's whole read, one round trip: which of its event ids are held (and their hashes) and the
# chains of its decisions, locked. Link rows have no chain columns; chain rows no link columns.
_READ_SQL: Final = f"""
WITH held AS ({_HELD_SQL.strip()}),
     locked AS ({_LOCK_SQL.strip().replace("$2::text[]", "$3::text[]")})
SELECT event_id, content_hash, {", ".join(_null_of(c) for c in _CHAIN_OUT)} FROM held
UNION ALL
SELECT NULL::text, NULL::text, {", ".join(_CHAIN_OUT)} FROM locked
"""

def _value_sql(column: str) -> str:
    if column in _ARRAYS:
        return f"string_to_array(t.{column}, ',')"
    if column in _TIMES:
        return f"to_timestamp(t.{column}::float8)"
    return f"t.{column}"


_NL, _NC = len(Link._fields), len(_CHAIN_COLUMNS)
# Packed columns: the links', the chains', the counters' (names, deltas); then separator and NULL marker.
_COLS: Final = split_sql(_NL + _NC + 2, first=2)
_LINK_COLS, _CH_COLS, _COUNTER_COLS = _COLS[:_NL], _COLS[_NL:_NL + _NC], _COLS[_NL + _NC:]
# A batch's whole index write, one statement: its new links, its chains' new state, its counters.
_WRITE_SQL: Final = f"""
WITH links AS (
    INSERT INTO dla_links (platform_run_id, {", ".join(Link._fields)})
    SELECT $1, l.* FROM unnest({", ".join(_LINK_COLS)}) AS l({", ".join(Link._fields)})
), counters AS ({counters_insert(COUNTERS_TABLE, *_COUNTER_COLS)})
INSERT INTO dla_chains (platform_run_id, {", ".join(_CHAIN_COLUMNS)})
SELECT $1, {", ".join(_value_sql(c) for c in _CHAIN_COLUMNS)}
  FROM unnest({", ".join(_CH_COLS)}) AS t({", ".join(_CHAIN_COLUMNS)})
    ON CONFLICT (platform_run_id, decision_id) DO UPDATE SET
       {", ".join(f"{c} = EXCLUDED.{c}" for c in _CHAIN_COLUMNS if c not in ("decision_id", "first_seen_at"))}
"""

_ANOMALY_SQL: Final = f"""
INSERT INTO dla_anomalies (platform_run_id, {", ".join(Anomaly._fields)})
VALUES ($1, {", ".join(f"${i + 2}" for i in range(len(Anomaly._fields)))}) ON CONFLICT DO NOTHING
"""

_UNRESOLVED_SQL: Final = """
SELECT decision_id, reasons, extract(epoch FROM unresolved_at)::float8 AS unresolved_at FROM dla_chains
 WHERE platform_run_id = $1 AND status = 'UNRESOLVED' ORDER BY unresolved_at LIMIT $2
"""


def _chain_of(r: Any) -> ChainRow:
    chain = Chain(decision_id=r["decision_id"], status=r["status"], source_event_id=r["source_event_id"],
                  action=r["action"], admitted_at_utc=r["admitted_at_utc"], decided_at_utc=r["decided_at_utc"],
                  decision_event_id=r["decision_event_id"], decision_ref=r["decision_ref"],
                  intent_ids=tuple(r["intent_ids"]), intent_event_ids=tuple(r["intent_event_ids"]),
                  outcome_action_ids=tuple(r["outcome_action_ids"]), outcome_ids=tuple(r["outcome_ids"]),
                  outcome_statuses=tuple(r["outcome_statuses"]))
    return ChainRow(chain, list(r["reasons"]), r["pins"], r["first_seen_at"], r["unresolved_at"], r["resolved_at"])


async def read_batch(conn: Any, platform_run_id: str, event_ids: Sequence[str],
                     decision_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, ChainRow]]:
    """(event id -> content hash of the held ones among `event_ids`, the chains of `decision_ids` locked)."""
    held: dict[str, str] = {}
    chains: dict[str, ChainRow] = {}
    for r in await conn.fetch(_READ_SQL, platform_run_id, list(event_ids), list(decision_ids)):
        if r["decision_id"] is None:
            held[r["event_id"]] = r["content_hash"]
        else:
            chains[r["decision_id"]] = _chain_of(r)
    return held, chains


async def lock_chains(conn: Any, platform_run_id: str, decision_ids: Sequence[str]) -> dict[str, ChainRow]:
    """The chains of these decisions that exist, locked for this transaction."""
    rows = await conn.fetch(_LOCK_SQL, platform_run_id, list(decision_ids))
    return {r["decision_id"]: _chain_of(r) for r in rows}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple | list):
        return ",".join(value)  # ids, statuses and reason codes hold no comma
    return repr(value) if isinstance(value, float) else str(value)


def _chain_columns(rows: Sequence[ChainRow]) -> list[list[str | None]]:
    columns: list[list[str | None]] = [[] for _ in _CHAIN_COLUMNS]
    for row in rows:
        values = {**{f: getattr(row.chain, f) for f in row.chain.__struct_fields__}, "reasons": row.reasons,
                  "pins": row.pins, "first_seen_at": row.first_seen_at, "unresolved_at": row.unresolved_at,
                  "resolved_at": row.resolved_at}
        for column, name in zip(columns, _CHAIN_COLUMNS, strict=True):
            column.append(_text(values[name]))
    return columns


async def write_batch(conn: Any, platform_run_id: str, links: Sequence[Link], chains: Sequence[ChainRow],
                      counters: Mapping[str, int]) -> None:
    """Insert the new links, upsert the chains, add the counters: one statement (none if all are empty)."""
    if not links and not chains and not any(counters.values()):
        return
    link_columns: list[list[str | None]] = [[getattr(link, f) for link in links] for f in Link._fields]
    await conn.execute(_WRITE_SQL, platform_run_id,
                       *pack_columns([*link_columns, *_chain_columns(chains), *counter_columns(counters)]))


async def insert_anomalies(conn: Any, platform_run_id: str, anomalies: Sequence[Anomaly]) -> None:
    if anomalies:
        await conn.executemany(_ANOMALY_SQL, [(platform_run_id, *a) for a in anomalies])


async def load_unresolved(conn: Any, platform_run_id: str, limit: int) -> list[tuple[str, list[str], float]]:
    rows = await conn.fetch(_UNRESOLVED_SQL, platform_run_id, limit)
    return [(r["decision_id"], list(r["reasons"]), r["unresolved_at"]) for r in rows]
