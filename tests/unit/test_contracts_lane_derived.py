"""What the Action Layer and the Decision Log/Audit add to the decision lane's contracts: the pins a
lane event carries for the events derived from it, the derived envelope, and the audit record's ids."""

from __future__ import annotations

import msgspec
import pytest

from fraudrt.contracts import (
    ACTION_OUTCOME,
    ActionOutcomePayload,
    Attempt,
    EnvelopeError,
    IdRecipeError,
    audit_chain_id,
    audit_record_event_id,
    decode_envelope,
    decode_payload,
    derived_envelope,
    lane_event_decoder,
)

pytestmark = pytest.mark.unit

PINS = {"platform_run_id": "platform_20310101T000000Z", "scenario_run_id": "a" * 32,
        "manifest_fingerprint": "b" * 64, "parameter_hash": "c" * 64, "seed": 7, "scenario_id": "baseline_v1",
        "run_id": "d" * 32}
TS = "2031-01-01T00:00:00.000000Z"


def _outcome() -> ActionOutcomePayload:
    return ActionOutcomePayload(
        outcome_id="1" * 32, action_id="2" * 32, decision_id="3" * 32, action_kind="APPROVE_TXN",
        idempotency_key="4" * 64, status="EXECUTED", reason_code="OK",
        attempts=[Attempt(attempt_seq=1, state="SUCCEEDED", provider_code="OK", latency_ms=1.5)],
        source_event_id="e" * 64, admitted_at_utc=TS, decided_at_utc=TS, requested_at_utc=TS, completed_at_utc=TS)


def test_a_derived_envelope_copies_the_parents_pins_and_round_trips() -> None:
    data = derived_envelope(PINS, event_id="1" * 32, event_type=ACTION_OUTCOME, ts_utc=TS,
                            producer="action_layer", parent_event_id="f" * 64, payload=_outcome())
    env = decode_envelope(data)  # the full boundary validation a consumer applies
    assert {k: getattr(env, k) for k in PINS} == PINS
    assert env.schema_version == "v1" and env.parent_event_id == "f" * 64 and env.producer == "action_layer"
    lane = lane_event_decoder.decode(data)
    assert lane.pin_values() == PINS
    assert decode_payload(lane) == _outcome()


def test_a_parent_without_a_manifest_fingerprint_cannot_have_a_derived_envelope() -> None:
    pins = {k: v for k, v in PINS.items() if k != "manifest_fingerprint"}
    with pytest.raises(EnvelopeError, match="manifest_fingerprint"):
        derived_envelope(pins, event_id="1" * 32, event_type=ACTION_OUTCOME, ts_utc=TS, producer="action_layer",
                         parent_event_id=None, payload=_outcome())


def test_lane_event_pins_are_validated_at_decode() -> None:
    bad = b'{"event_id":"x","event_type":"action_intent","ts_utc":"' + TS.encode() + \
        b'","manifest_fingerprint":"not-hex","payload":{}}'
    with pytest.raises(msgspec.ValidationError):
        lane_event_decoder.decode(bad)


def test_a_chain_has_one_resolved_and_at_most_one_unresolved_audit_event_id() -> None:
    audit_id = audit_chain_id(PINS["platform_run_id"], "3" * 32)
    assert audit_record_event_id(audit_id, "RESOLVED") == audit_id
    unresolved = audit_record_event_id(audit_id, "UNRESOLVED")
    assert unresolved != audit_id and len(unresolved) == 32
    assert audit_record_event_id(audit_id, "UNRESOLVED") == unresolved  # deterministic
    with pytest.raises(IdRecipeError):
        audit_record_event_id(audit_id, "PENDING")
