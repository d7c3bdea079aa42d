"""What the Action Layer did, for tests, the run report and operators: read only through here.

`outcomes_for(conn, run)`: one row per intent taken in (PENDING while it waits for a retry), with
its outcome's id, status, reason and attempts. `intake_progress(conn, run)`: the run's counters
(intake, outcomes by status, duplicates, anomalies, attempts), as the health file reports them.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from fraudrt.contracts import Attempt

from .._run_counters import load_counters
from ._store import COUNTERS, COUNTERS_TABLE

_attempts: Final = msgspec.json.Decoder(list[Attempt])


class IntentOutcome(msgspec.Struct, frozen=True, kw_only=True):
    idempotency_key: str
    intent_event_id: str
    action_id: str
    decision_id: str
    action_kind: str
    outcome_id: str
    status: str  # PENDING | EXECUTED | FAILED | DENIED
    reason_code: str | None
    attempts: list[Attempt]
    provider_ref: str | None
    completed_at_utc: str | None


_SQL: Final = """
SELECT idempotency_key, intent_event_id, action_id, decision_id, action_kind, outcome_id, status, reason_code,
       attempts_doc, provider_ref, completed_at_utc
  FROM al_intents WHERE platform_run_id = $1 ORDER BY taken_in_at, idempotency_key
"""


async def outcomes_for(conn: Any, platform_run_id: str) -> list[IntentOutcome]:
    """Every intent of the run the Action Layer took in, with its outcome (or PENDING)."""
    rows = await conn.fetch(_SQL, platform_run_id)
    return [IntentOutcome(idempotency_key=r["idempotency_key"], intent_event_id=r["intent_event_id"],
                          action_id=r["action_id"], decision_id=r["decision_id"], action_kind=r["action_kind"],
                          outcome_id=r["outcome_id"], status=r["status"], reason_code=r["reason_code"],
                          attempts=_attempts.decode(bytes(r["attempts_doc"])), provider_ref=r["provider_ref"],
                          completed_at_utc=r["completed_at_utc"]) for r in rows]


async def intake_progress(conn: Any, platform_run_id: str) -> dict[str, int]:
    """The run's counters (`intake_total`, `outcome_total`, `executed_total`, ...), 0 when absent."""
    loaded = await load_counters(conn, COUNTERS_TABLE, platform_run_id)
    return {name: loaded.get(name, 0) for name in COUNTERS}
