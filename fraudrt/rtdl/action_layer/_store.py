"""The Action Layer's statements: a batch's whole ledger work is a handful of them, whatever its size."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from fraudrt.runtime import pack_columns, split_sql

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


_KNOWN_SQL: Final = """
SELECT idempotency_key, intent_event_id, content_hash FROM al_intents
 WHERE platform_run_id = $1 AND (idempotency_key = ANY($2::text[]) OR intent_event_id = ANY($3::text[]))
"""

_TEXT_COLUMNS: Final = ("idempotency_key", "intent_event_id", "content_hash", "action_id", "decision_id",
                        "action_kind", "outcome_id", "status", "reason_code", "attempts", "provider_ref",
                        "taken_in_at", "completed_at_utc")
_N: Final = len(_TEXT_COLUMNS)
_INS_COLS: Final = split_sql(_N, first=2, casts=["text"] * 9 + ["int4", "text", "float8", "text"])
_BYTES_AT: Final = 2 + _N + 2  # after the packed columns, the separator and the NULL marker
_INSERT_SQL: Final = f"""
INSERT INTO al_intents (platform_run_id, {", ".join(_TEXT_COLUMNS[:-2])}, taken_in_at, completed_at_utc,
                        attempts_doc, intent)
SELECT $1, {", ".join(f"t.{c}" for c in _TEXT_COLUMNS[:-2])}, to_timestamp(t.taken_in_at), t.completed_at_utc,
       t.attempts_doc, t.intent
  FROM unnest({", ".join(_INS_COLS)}, ${_BYTES_AT}::bytea[], ${_BYTES_AT + 1}::bytea[])
    AS t({", ".join(_TEXT_COLUMNS)}, attempts_doc, intent)
"""

_PENDING_SQL: Final = """
SELECT idempotency_key, intent, attempts_doc, attempts, extract(epoch FROM taken_in_at)::float8 AS taken_in_at
  FROM al_intents
 WHERE platform_run_id = $1 AND idempotency_key = ANY($2::text[]) AND status = 'PENDING'
   FOR UPDATE
"""

_UPD_TEXT: Final = ("idempotency_key", "status", "reason_code", "attempts", "provider_ref", "completed_at_utc")
_UPD_COLS: Final = split_sql(len(_UPD_TEXT), first=2, casts=["text", "text", "text", "int4", "text", "text"])
_UPD_BYTES_AT: Final = 2 + len(_UPD_TEXT) + 2
_UPDATE_SQL: Final = f"""
UPDATE al_intents AS a
   SET status = t.status, reason_code = t.reason_code, attempts = t.attempts, provider_ref = t.provider_ref,
       completed_at_utc = t.completed_at_utc, attempts_doc = t.attempts_doc,
       intent = CASE WHEN t.status = 'PENDING' THEN a.intent END
  FROM unnest({", ".join(_UPD_COLS)}, ${_UPD_BYTES_AT}::bytea[]) AS t({", ".join(_UPD_TEXT)}, attempts_doc)
 WHERE a.platform_run_id = $1 AND a.idempotency_key = t.idempotency_key
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


async def insert_intents(conn: Any, platform_run_id: str, rows: Sequence[IntentRow]) -> None:
    if not rows:
        return
    text = [[_text(getattr(r, c)) for r in rows] for c in _TEXT_COLUMNS]
    await conn.execute(_INSERT_SQL, platform_run_id, *pack_columns(text),
                       [r.attempts_doc for r in rows], [r.intent for r in rows])


async def lock_pending(conn: Any, platform_run_id: str, keys: Sequence[str]) -> list[Pending]:
    """The PENDING rows of these keys, locked for this transaction (a finished key is left out)."""
    rows = await conn.fetch(_PENDING_SQL, platform_run_id, list(keys))
    return [Pending(r["idempotency_key"], bytes(r["intent"]), bytes(r["attempts_doc"]), r["attempts"],
                    r["taken_in_at"]) for r in rows]


async def update_intents(conn: Any, platform_run_id: str, rows: Sequence[IntentRow]) -> None:
    """Write a retry's result: still PENDING (more attempts) or finished (the intent bytes dropped)."""
    if not rows:
        return
    text = [[_text(getattr(r, c)) for r in rows] for c in _UPD_TEXT]
    await conn.execute(_UPDATE_SQL, platform_run_id, *pack_columns(text), [r.attempts_doc for r in rows])


async def load_pending(conn: Any, platform_run_id: str) -> list[tuple[str, float]]:
    rows = await conn.fetch(_LOAD_PENDING_SQL, platform_run_id)
    return [(r["idempotency_key"], r["taken_in_at"]) for r in rows]


async def insert_anomalies(conn: Any, platform_run_id: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if rows:
        await conn.executemany(_ANOMALY_SQL, [(platform_run_id, *r) for r in rows])
