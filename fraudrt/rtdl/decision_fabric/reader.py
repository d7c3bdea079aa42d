"""The typed reader of the Decision Fabric's state: the only way other packages read `df_*` tables.

    rows = await decisions_for(conn, platform_run_id)          # every decision of the run
    digest = await decisions_digest(conn, platform_run_id)     # one digest of all their content

For tests, the chaos checks and the run report: each AUTH_REQUEST of a run has at most one decision
row (the primary key is its deterministic decision id), and `content_digest` is the decision payload
without its run-specific fields, so two runs of one world agree row for row. These read the whole
run: never call them on a hot path.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from fraudrt.contracts import format_ts_utc

__all__ = ["DecisionRecord", "decisions_digest", "decisions_for", "pending_for"]


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    decision_id: str
    source_event_id: str
    flow_id: int
    action: str
    score: float | None
    context_status: str
    posture_mode: str
    model: str | None
    bundle_digest: str
    content_digest: str
    admitted_at_utc: str
    decided_at_utc: str
    waited_ms: float


_DECISIONS: Final = """
SELECT decision_id, source_event_id, flow_id, action, score, context_status, posture_mode, model, bundle_digest,
       content_digest, admitted_at, decided_at, waited_ms
  FROM df_decisions WHERE platform_run_id = $1 ORDER BY decision_id
"""
_PENDING: Final = """
SELECT decision_id, flow_id, first_seen, deadline_at FROM df_pending WHERE platform_run_id = $1
 ORDER BY first_seen, decision_id
"""


async def decisions_for(conn: Any, platform_run_id: str) -> list[DecisionRecord]:
    """Every decision of the run, by decision id."""
    return [DecisionRecord(decision_id=r["decision_id"], source_event_id=r["source_event_id"], flow_id=r["flow_id"],
                           action=r["action"], score=r["score"], context_status=r["context_status"],
                           posture_mode=r["posture_mode"], model=r["model"], bundle_digest=r["bundle_digest"],
                           content_digest=r["content_digest"], admitted_at_utc=format_ts_utc(r["admitted_at"]),
                           decided_at_utc=format_ts_utc(r["decided_at"]), waited_ms=r["waited_ms"])
            for r in await conn.fetch(_DECISIONS, platform_run_id)]


async def decisions_digest(conn: Any, platform_run_id: str) -> str:
    """sha256 over every (decision id, content digest) of the run, in decision id order."""
    h = hashlib.sha256()
    for r in await conn.fetch("SELECT decision_id, content_digest FROM df_decisions WHERE platform_run_id = $1 "
                              "ORDER BY decision_id", platform_run_id):
        h.update(f"{r['decision_id']}:{r['content_digest']}\n".encode())
    return h.hexdigest()


async def pending_for(conn: Any, platform_run_id: str) -> list[tuple[str, int, float, float]]:
    """(decision id, flow id, first seen, deadline) of every request still waiting for its context."""
    return [(r["decision_id"], r["flow_id"], r["first_seen"], r["deadline_at"])
            for r in await conn.fetch(_PENDING, platform_run_id)]
