"""DF's batch statements: what is known of a batch's decisions, pending requests, decided rows.

Every statement takes a whole batch (columns packed with the runtime's `pack_columns`) and runs in
the actor's batch (or timer) transaction, so a decision row, its outbox rows and the checkpoint or
timer that led to it commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from fraudrt.runtime import pack_columns, split_sql

_KNOWN_COLS: Final = split_sql(1, first=2)
# One primary-key probe per id (LATERAL ... LIMIT 1): a plain join lets the planner hash or scan the
# run's rows once the batch looks big enough, which grows with the run.
_KNOWN: Final = f"""
SELECT q.decision_id, d.source_hash AS decided_hash, p.source_hash AS pending_hash
  FROM unnest({_KNOWN_COLS[0]}) AS q(decision_id)
  LEFT JOIN LATERAL (SELECT source_hash FROM df_decisions
                      WHERE platform_run_id = $1 AND decision_id = q.decision_id LIMIT 1) d ON true
  LEFT JOIN LATERAL (SELECT source_hash FROM df_pending
                      WHERE platform_run_id = $1 AND decision_id = q.decision_id LIMIT 1) p ON true
 WHERE d.source_hash IS NOT NULL OR p.source_hash IS NOT NULL
"""

_DECISION_COLS: Final = ("decision_id", "source_event_id", "flow_id", "action", "score", "context_status",
                         "posture_mode", "model", "bundle_digest", "content_digest", "source_hash", "admitted_at",
                         "decided_at", "waited_ms")
_DECISION_CASTS: Final = ("text", "text", "bigint", "text", "float8", "text", "text", "text", "text", "text", "text",
                          "float8", "float8", "float8")
_D: Final = split_sql(len(_DECISION_COLS), first=2, casts=_DECISION_CASTS)
_INSERT_DECISIONS: Final = f"""
INSERT INTO df_decisions (platform_run_id, decision_id, source_event_id, flow_id, action, score, context_status,
                          posture_mode, model, bundle_digest, content_digest, source_hash, admitted_at, decided_at,
                          waited_ms)
SELECT $1, d.decision_id, d.source_event_id, d.flow_id, d.action, d.score, d.context_status, d.posture_mode, d.model,
       d.bundle_digest, d.content_digest, d.source_hash, to_timestamp(d.admitted_at), to_timestamp(d.decided_at),
       d.waited_ms
  FROM unnest({", ".join(_D)}) AS d({", ".join(_DECISION_COLS)})
    ON CONFLICT (platform_run_id, decision_id) DO NOTHING
RETURNING decision_id
"""

_PENDING_COLS: Final = ("decision_id", "flow_id", "source_hash", "stream", "shard_id", "sequence_number", "arrival_ts",
                        "first_seen", "deadline_at")
_PENDING_CASTS: Final = ("text", "bigint", "text", "text", "text", "text", "float8", "float8", "float8")
_P: Final = split_sql(len(_PENDING_COLS), first=2, casts=_PENDING_CASTS)
_DATA_PARAM: Final = 2 + len(_PENDING_COLS) + 2
_INSERT_PENDING: Final = f"""
INSERT INTO df_pending (platform_run_id, decision_id, flow_id, source_hash, stream, shard_id, sequence_number,
                        arrival_ts, first_seen, deadline_at, data)
SELECT $1, p.decision_id, p.flow_id, p.source_hash, p.stream, p.shard_id, p.sequence_number, p.arrival_ts,
       p.first_seen, p.deadline_at, p.data
  FROM unnest({", ".join(_P)}, ${_DATA_PARAM}::bytea[]) AS p({", ".join(_PENDING_COLS)}, data)
    ON CONFLICT (platform_run_id, decision_id) DO NOTHING
"""

_PENDING_SELECT: Final = """
SELECT decision_id, flow_id, source_hash, stream, shard_id, sequence_number, arrival_ts, first_seen, deadline_at, data
  FROM df_pending"""
_PENDING_OLDEST: Final = f"{_PENDING_SELECT} WHERE platform_run_id = $1 ORDER BY first_seen, decision_id LIMIT $2"
_PENDING_BY_ID: Final = f"{_PENDING_SELECT} WHERE platform_run_id = $1 AND decision_id = ANY($2::text[])"
_DELETE_PENDING: Final = "DELETE FROM df_pending WHERE platform_run_id = $1 AND decision_id = ANY($2::text[])"
_PENDING_AGES: Final = """
SELECT decision_id, first_seen FROM df_pending WHERE platform_run_id = $1 ORDER BY first_seen, decision_id
"""
_COUNTS: Final = """
SELECT action, context_status, posture_mode, coalesce(model, '') AS model, count(*) AS n,
       count(*) FILTER (WHERE decided_at > clock_timestamp() - make_interval(secs => $2)) AS recent
  FROM df_decisions WHERE platform_run_id = $1 GROUP BY 1, 2, 3, 4
"""


class Known(NamedTuple):
    decided_hash: str | None
    pending_hash: str | None


class DecisionRow(NamedTuple):
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
    source_hash: str
    admitted_at: float
    decided_at: float
    waited_ms: float


class PendingRow(NamedTuple):
    decision_id: str
    flow_id: int
    source_hash: str
    stream: str
    shard_id: str
    sequence_number: str
    arrival_ts: float
    first_seen: float
    deadline_at: float
    data: bytes


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return repr(float(value)) if isinstance(value, float) else str(value)


async def known(conn: Any, platform_run_id: str, decision_ids: Sequence[str]) -> dict[str, Known]:
    """The decision ids already decided or pending, with the source hash each was taken in with."""
    if not decision_ids:
        return {}
    rows = await conn.fetch(_KNOWN, platform_run_id, *pack_columns([list(decision_ids)]))
    return {r["decision_id"]: Known(r["decided_hash"], r["pending_hash"]) for r in rows}


async def insert_decisions(conn: Any, platform_run_id: str, rows: Sequence[DecisionRow]) -> set[str]:
    """Insert decision rows; returns the ids inserted (one already there is left as it was)."""
    if not rows:
        return set()
    columns = [[_text(getattr(r, c)) for r in rows] for c in _DECISION_COLS]
    inserted = await conn.fetch(_INSERT_DECISIONS, platform_run_id, *pack_columns(columns))
    return {r["decision_id"] for r in inserted}


async def insert_pending(conn: Any, platform_run_id: str, rows: Sequence[PendingRow]) -> None:
    if not rows:
        return
    columns = [[_text(getattr(r, c)) for r in rows] for c in _PENDING_COLS]
    await conn.execute(_INSERT_PENDING, platform_run_id, *pack_columns(columns), [r.data for r in rows])


def _pending(row: Any) -> PendingRow:
    return PendingRow(row["decision_id"], row["flow_id"], row["source_hash"], row["stream"], row["shard_id"],
                      row["sequence_number"], row["arrival_ts"], row["first_seen"], row["deadline_at"],
                      bytes(row["data"]))


async def oldest_pending(conn: Any, platform_run_id: str, limit: int) -> list[PendingRow]:
    return [_pending(r) for r in await conn.fetch(_PENDING_OLDEST, platform_run_id, limit)]


async def pending_by_id(conn: Any, platform_run_id: str, decision_ids: Sequence[str]) -> list[PendingRow]:
    if not decision_ids:
        return []
    return [_pending(r) for r in await conn.fetch(_PENDING_BY_ID, platform_run_id, list(decision_ids))]


async def delete_pending(conn: Any, platform_run_id: str, decision_ids: Sequence[str]) -> None:
    if decision_ids:
        await conn.execute(_DELETE_PENDING, platform_run_id, list(decision_ids))


async def pending_ages(conn: Any, platform_run_id: str) -> list[tuple[str, float]]:
    """(decision_id, first seen) of every waiting request, oldest first: read once at start."""
    return [(r["decision_id"], r["first_seen"]) for r in await conn.fetch(_PENDING_AGES, platform_run_id)]


async def decision_counts(conn: Any, platform_run_id: str,
                          recent_s: float) -> list[tuple[str, str, str, str, int, int]]:
    """(action, context_status, posture_mode, model, n, of which in the last `recent_s`) of the run's
    decisions: read once at start (a scan of the run's rows, never on the hot path)."""
    return [(r["action"], r["context_status"], r["posture_mode"], r["model"], r["n"], r["recent"])
            for r in await conn.fetch(_COUNTS, platform_run_id, float(recent_s))]


def epoch_to_dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
