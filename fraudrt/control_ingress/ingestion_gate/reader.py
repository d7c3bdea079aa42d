"""IG's typed reader for others (the run reporter): what IG decided for a run, counted, from its own
tables; nothing IG does not already record.

- ADMIT and still-pending admissions: `ig_admissions` (one row per admitted event; the ADMIT
  receipt is indexed there).
- DUPLICATE and QUARANTINE receipts: `ig_receipts` (ADMIT rows there predate migration 002 and are
  left out, their admission row already counts them).
- Quarantine reasons: `ig_quarantines`.

`ig_admissions` has no index on the run (every index entry costs IG's hot path, see sql/002), so
`ingress_counts` reads the table once per call: callers ask when IG's counters have moved, not on a
timer. The envelope's `producer` is kept in the receipt objects only, not in these tables.
"""

from __future__ import annotations

from typing import Any

import msgspec


class IngressCount(msgspec.Struct, frozen=True, kw_only=True):
    decision: str  # ADMIT | PENDING | DUPLICATE | QUARANTINE
    event_type: str | None
    event_class: str | None
    count: int


class QuarantineReason(msgspec.Struct, frozen=True, kw_only=True):
    event_type: str | None
    reason_code: str
    count: int


class IngressCounts(msgspec.Struct, frozen=True, kw_only=True):
    platform_run_id: str
    counts: list[IngressCount]
    quarantine_reasons: list[QuarantineReason]
    receipt_refs_sample: list[str]
    quarantine_refs_sample: list[str]


_ADMISSIONS = """
SELECT CASE state WHEN 'ADMITTED' THEN 'ADMIT' ELSE 'PENDING' END AS decision,
       event_type, event_class, count(*) AS n
  FROM ig_admissions WHERE platform_run_id = $1 GROUP BY 1, 2, 3"""
_RECEIPTS = """
SELECT decision, event_type, event_class, count(*) AS n
  FROM ig_receipts WHERE platform_run_id = $1 AND decision <> 'ADMIT' GROUP BY 1, 2, 3"""
_REASONS = """
SELECT event_type, reason_code, count(*) AS n FROM ig_quarantines WHERE platform_run_id = $1 GROUP BY 1, 2"""
_RECEIPT_REFS = """
SELECT receipt_ref FROM ig_admissions WHERE platform_run_id = $1 AND receipt_ref IS NOT NULL LIMIT $2"""
_QUARANTINE_REFS = "SELECT record_ref FROM ig_quarantines WHERE platform_run_id = $1 ORDER BY quarantine_id LIMIT $2"


async def ingress_counts(conn: Any, platform_run_id: str, *, sample: int = 10) -> IngressCounts:
    """Every IG decision of the run, counted by decision, event type and class, in one snapshot."""
    async with conn.acquire() if hasattr(conn, "acquire") else _same(conn) as c, c.transaction(
            isolation="repeatable_read", readonly=True):
        rows = [*await c.fetch(_ADMISSIONS, platform_run_id), *await c.fetch(_RECEIPTS, platform_run_id)]
        reasons = await c.fetch(_REASONS, platform_run_id)
        receipt_refs = await c.fetch(_RECEIPT_REFS, platform_run_id, sample)
        quarantine_refs = await c.fetch(_QUARANTINE_REFS, platform_run_id, sample)
    return IngressCounts(
        platform_run_id=platform_run_id,
        counts=[IngressCount(decision=r["decision"], event_type=r["event_type"], event_class=r["event_class"],
                             count=int(r["n"])) for r in rows],
        quarantine_reasons=[QuarantineReason(event_type=r["event_type"], reason_code=r["reason_code"],
                                             count=int(r["n"])) for r in reasons],
        receipt_refs_sample=[r["receipt_ref"] for r in receipt_refs],
        quarantine_refs_sample=[r["record_ref"] for r in quarantine_refs])


class _same:
    """A connection used as if acquired from a pool."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def __aenter__(self) -> Any:
        return self.conn

    async def __aexit__(self, *exc: Any) -> None:
        return None
