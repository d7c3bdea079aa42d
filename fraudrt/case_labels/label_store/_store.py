"""The Label Store's writer boundary: assertions in, an idempotency outcome for each.

ACCEPTED: a new `label_assertion_id`, appended. DUPLICATE: the id is known with the same payload
hash (a re-published event, a replay): nothing written. MISMATCH: the id is known with another
hash (the same timeline event asserting another value, or other times): recorded in
`cl_mismatches`, never applied, the original untouched. Contract checks (`label_problem`) come
first, in the caller: a refused assertion never reaches the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import msgspec

from fraudrt.contracts import LabelAssertionPayload

from .._ledger import Ledger, Registered

Outcome = Literal["ACCEPTED", "DUPLICATE", "MISMATCH"]

_COLUMNS: Final = ["label_assertion_id", "payload_hash", "event_id", "label_type", "label_value", "source_type",
                   "actor_id", "effective_time", "observed_time", "training_eligible", "case_id",
                   "case_timeline_event_id", "assertion"]
_CASTS: Final = ["text"] * 7 + ["timestamptz", "timestamptz", "boolean", "text", "text", "jsonb"]
_LEDGER: Final = Ledger("ls_label_assertions", _COLUMNS, _CASTS)
_encode: Final = msgspec.json.Encoder()


def _row(a: LabelAssertionPayload) -> tuple[str | None, ...]:
    return (a.label_assertion_id, a.payload_hash, a.label_subject_key.event_id, a.label_type, a.label_value,
            a.source_type, a.actor_id, a.effective_time, a.observed_time, "f" if a.source_type == "AUTO" else "t",
            a.case_id, a.case_timeline_event_id, _encode.encode(a).decode())


async def write_assertions(conn: object, platform_run_id: str, assertions: Sequence[LabelAssertionPayload], *,
                           component: str = "label_store") -> Registered[LabelAssertionPayload]:
    """Register `assertions` (all of `platform_run_id`, already checked) in `conn`'s transaction."""
    return await _LEDGER.register(conn, platform_run_id, assertions, [_row(a) for a in assertions],
                                  component=component, kind="label_assertion",
                                  payload_of=lambda a: _encode.encode(a).decode())


def outcome_of(result: Registered[LabelAssertionPayload], assertion: LabelAssertionPayload) -> Outcome:
    if any(a is assertion for a in result.new):
        return "ACCEPTED"
    if any(a is assertion for a in result.duplicates):
        return "DUPLICATE"
    return "MISMATCH"
