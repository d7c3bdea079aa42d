"""What the Decision Log/Audit holds, for tests, the run report and operators: read only through here.

`chains(conn, run)`: every decision chain of the run with its status and reasons.
`links(conn, run, decision_id)`: the audited records of one chain with their segment lines.
`anomalies(conn, run)`: mismatched copies and conflicting links. `audit_progress(conn, run)`: the
run's counters (`lineage_unresolved_total`, chains, records by type, decisions by action, ...).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .._run_counters import load_counters
from ._store import COUNTERS, COUNTERS_TABLE


class ChainView(msgspec.Struct, frozen=True, kw_only=True):
    decision_id: str
    status: str  # PENDING | RESOLVED | UNRESOLVED
    reasons: list[str]
    source_event_id: str
    action: str
    decision_event_id: str | None
    decision_ref: str | None
    intent_ids: list[str]
    outcome_ids: list[str]
    outcome_statuses: list[str]
    late: bool  # resolved after its grace period had ended


class LinkView(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    event_type: str
    decision_id: str
    action_id: str | None
    content_hash: str
    segment_ref: str
    stream: str
    shard_id: str
    sequence_number: str


class AnomalyView(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    event_id: str
    decision_id: str | None
    detail: str
    segment_ref: str | None


_CHAINS_SQL: Final = """
SELECT decision_id, status, reasons, source_event_id, action, decision_event_id, decision_ref, intent_ids,
       outcome_ids, outcome_statuses, (status = 'RESOLVED' AND unresolved_at IS NOT NULL) AS late
  FROM dla_chains WHERE platform_run_id = $1 ORDER BY first_seen_at, decision_id
"""
_LINKS_SQL: Final = """
SELECT event_id, event_type, decision_id, action_id, content_hash, segment_ref, stream, shard_id, sequence_number
  FROM dla_links WHERE platform_run_id = $1 AND decision_id = $2
"""
_ANOMALIES_SQL: Final = """
SELECT kind, event_id, decision_id, detail, segment_ref FROM dla_anomalies WHERE platform_run_id = $1
 ORDER BY created_at, stream, shard_id, sequence_number
"""


async def chains(conn: Any, platform_run_id: str) -> list[ChainView]:
    """Every chain of the run (first seen first)."""
    return [msgspec.convert(dict(r), ChainView) for r in await conn.fetch(_CHAINS_SQL, platform_run_id)]


async def links(conn: Any, platform_run_id: str, decision_id: str) -> list[LinkView]:
    return [msgspec.convert(dict(r), LinkView) for r in await conn.fetch(_LINKS_SQL, platform_run_id, decision_id)]


async def anomalies(conn: Any, platform_run_id: str) -> list[AnomalyView]:
    return [msgspec.convert(dict(r), AnomalyView) for r in await conn.fetch(_ANOMALIES_SQL, platform_run_id)]


async def audit_progress(conn: Any, platform_run_id: str) -> dict[str, int]:
    """The run's counters, 0 when absent."""
    loaded = await load_counters(conn, COUNTERS_TABLE, platform_run_id)
    return {name: loaded.get(name, 0) for name in COUNTERS}
