"""The Action Layer's statements: a batch's whole ledger work is a handful of them, whatever its size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from fraudrt.runtime import pack_columns, split_sql

from .._run_counters import counter_columns, counters_insert

COUNTERS_TABLE: Final = "al_run_counters"
# The run's counters, kept in COUNTERS_TABLE (`intake_total == outcome_total` once nothing is in flight).
COUNTERS: Final = ("intake_total", "outcome_total", "executed_total", "failed_total", "denied_total",
                   "duplicates_total", "anomalies_total", "rejected_total", "passed_over_total", "attempts_total",
                   "retries_total")


class IntentRow(NamedTuple):
    """One ledger row as written (new) or rewritten (a retry's result)."""

    idempotency_key: str
    intent_event_id: str
    content_hash: str
    action_id: str
    decision_id: str
    action_kind: str
    outcome_id: str
    status: str
    reason_code: str | None
    attempts: int
    attempts_doc: bytes
    provider_ref: str | None
    intent: bytes | None
    taken_in_at: float
    completed_at_utc: str | None


class Held(NamedTuple):
    idempotency_key: str
    intent_event_id: str
    content_hash: str


class Pending(NamedTuple):
    idempotency_key: str
    intent: bytes
    attempts_doc: bytes
    attempts: int
    taken_in_at: float


# One probe per key and one per event id (unique indexes), never a plan that could scan the run.
_KNOWN_SQL: Final = """
SELECT a.idempotency_key, a.intent_event_id, a.content_hash FROM unnest($2::text[]) AS k(key)
 CROSS JOIN LATERAL (SELECT idempotency_key, intent_event_id, content_hash FROM al_intents
                      WHERE platform_run_id = $1 AND idempotency_key = k.key) AS a
UNION
SELECT a.idempotency_key, a.intent_event_id, a.content_hash FROM unnest($3::text[]) AS e(event_id)
 CROSS JOIN LATERAL (SELECT idempotency_key, intent_event_id, content_hash FROM al_intents
                      WHERE platform_run_id = $1 AND intent_event_id = e.event_id) AS a
"""

_TEXT_COLUMNS: Final = ("idempotency_key", "intent_event_id", "content_hash", "action_id", "decision_id",
                        "action_kind", "outcome_id", "status", "reason_code", "attempts", "provider_ref",
                        "taken_in_at", "completed_at_utc")
_N: Final = len(_TEXT_COLUMNS)
# The intents' packed columns, then the counters' two ($2 .. $N+3), the separator and NULL marker,
# then the two bytea columns.
_COLS: Final = split_sql(_N + 2, first=2, casts=["text"] * 9 + ["int4", "text", "float8", "text", "text", "text"])
_BYTES_AT: Final = 2 + _N + 2 + 2
_WRITE_SQL: Final = f"""
WITH counters AS ({counters_insert(COUNTERS_TABLE, _COLS[_N], _COLS[_N + 1])})
INSERT INTO al_intents (platform_run_id, {", ".join(_TEXT_COLUMNS[:-2])}, taken_in_at, completed_at_utc,
                        attempts_doc, intent)
SELECT $1, {", ".join(f"t.{c}" for c in _TEXT_COLUMNS[:-2])}, to_timestamp(t.taken_in_at), t.completed_at_utc,
       t.attempts_doc, t.intent
  FROM unnest({", ".join(_COLS[:_N])}, ${_BYTES_AT}::bytea[], ${_BYTES_AT + 1}::bytea[])
    AS t({", ".join(_TEXT_COLUMNS)}, attempts_doc, intent)
"""

_PENDING_SQL: Final = """
SELECT a.idempotency_key, a.intent, a.attempts_doc, a.attempts,
       extract(epoch FROM a.taken_in_at)::float8 AS taken_in_at
  FROM unnest($2::text[]) AS k(key)
 CROSS JOIN LATERAL (SELECT * FROM al_intents WHERE platform_run_id = $1 AND idempotency_key = k.key
                        AND status = 'PENDING' FOR UPDATE) AS a
"""

# One row per execution, by primary key (a retry round touches few rows; a join with the batch could be
# planned as a scan of the run).
_UPDATE_SQL: Final = """
UPDATE al_intents
   SET status = $3, reason_code = $4, attempts = $5, provider_ref = $6, completed_at_utc = $7, attempts_doc = $8,
       intent = CASE WHEN $3 = 'PENDING' THEN intent END
 WHERE platform_run_id = $1 AND idempotency_key = $2
"""

_LOAD_PENDING_SQL: Final = """
SELECT idempotency_key, extract(epoch FROM taken_in_at)::float8 AS taken_in_at FROM al_intents
 WHERE platform_run_id = $1 AND status = 'PENDING' ORDER BY taken_in_at
"""

_ANOMALY_SQL: Final = """
INSERT INTO al_anomalies (platform_run_id, stream, shard_id, sequence_number, kind, event_id, idempotency_key,
                          content_hash, held_event_id, held_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING
"""


async def known(conn: Any, platform_run_id: str, keys: Sequence[str], event_ids: Sequence[str]) -> list[Held]:
    """The ledger rows holding any of these idempotency keys or intent event ids."""
    rows = await conn.fetch(_KNOWN_SQL, platform_run_id, list(keys), list(event_ids))
    return [Held(r["idempotency_key"], r["intent_event_id"], r["content_hash"]) for r in rows]


def _text(value: object) -> str | None:
    if value is None:
        return None
    return repr(value) if isinstance(value, float) else str(value)


async def write_intents(conn: Any, platform_run_id: str, rows: Sequence[IntentRow],
                        counters: Mapping[str, int]) -> None:
    """Insert the batch's new ledger rows and add its counters: one statement."""
    text = [[_text(getattr(r, c)) for r in rows] for c in _TEXT_COLUMNS]
    await conn.execute(_WRITE_SQL, platform_run_id, *pack_columns([*text, *counter_columns(counters)]),
                       [r.attempts_doc for r in rows], [r.intent for r in rows])


async def lock_pending(conn: Any, platform_run_id: str, keys: Sequence[str]) -> list[Pending]:
    """The PENDING rows of these keys, locked for this transaction (a finished key is left out)."""
    rows = await conn.fetch(_PENDING_SQL, platform_run_id, list(keys))
    return [Pending(r["idempotency_key"], bytes(r["intent"]), bytes(r["attempts_doc"]), r["attempts"],
                    r["taken_in_at"]) for r in rows]


async def update_intents(conn: Any, platform_run_id: str, rows: Sequence[IntentRow]) -> None:
    """Write a retry's result: still PENDING (more attempts) or finished (the intent bytes dropped)."""
    if rows:
        await conn.executemany(_UPDATE_SQL, [(platform_run_id, r.idempotency_key, r.status, r.reason_code, r.attempts,
                                              r.provider_ref, r.completed_at_utc, r.attempts_doc) for r in rows])


async def load_pending(conn: Any, platform_run_id: str) -> list[tuple[str, float]]:
    rows = await conn.fetch(_LOAD_PENDING_SQL, platform_run_id)
    return [(r["idempotency_key"], r["taken_in_at"]) for r in rows]


async def insert_anomalies(conn: Any, platform_run_id: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        await conn.executemany(_ANOMALY_SQL, [(platform_run_id, *r) for r in rows])
