"""Decision-lane events as the decision lane publishes them (contracts `_decisions.py`, ids `_ids.py`),
for tests of their consumers before (or without) the real lane: one decision, one intent, one
outcome and one audit record per traffic AUTH_REQUEST, with timestamps a test chooses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fraudrt.contracts import (
    ACTION_INTENT,
    ACTION_KIND_OF,
    ACTION_OUTCOME,
    AUDIT_RECORD,
    CASE_TRIGGER,
    DECISION_RESPONSE,
    TXN_DISPOSITION,
    ActionIntentPayload,
    ActionOutcomePayload,
    Attempt,
    AuditRecordPayload,
    BundleRef,
    DecisionPayload,
    DecisionTimings,
    Envelope,
    FeatureBasis,
    PostureRef,
    SourceEvent,
    action_id,
    action_idempotency_key,
    action_intent_event_id,
    action_outcome_id,
    audit_chain_id,
    decision_id,
    decision_response_event_id,
    encode_envelope,
    format_ts_utc,
)

PINS_KEYS = ("platform_run_id", "scenario_run_id", "manifest_fingerprint", "parameter_hash", "seed", "scenario_id")


@dataclass(frozen=True)
class Chain:
    """The four envelopes of one decision chain (bytes, ready for the bus) and its ids."""

    decision_id: str
    decision: bytes
    intent: bytes
    outcome: bytes
    audit: bytes


def _ts(dt: datetime) -> str:
    return format_ts_utc(dt)


def chain(pins: dict[str, Any], traffic_event_id: str, flow_id: int, action: str, *, admitted: datetime,
          decide_ms: float = 5.0, outcome_ms: float = 7.0, audit_ms: float = 20.0, stream: str = "traffic",
          outcome_status: str = "EXECUTED") -> Chain:
    run = pins["platform_run_id"]
    did = decision_id(run, traffic_event_id)
    decided = admitted + timedelta(milliseconds=decide_ms)
    completed = decided + timedelta(milliseconds=outcome_ms)
    audited = admitted + timedelta(milliseconds=audit_ms)
    kind = ACTION_KIND_OF[action]
    idem = action_idempotency_key(traffic_event_id, TXN_DISPOSITION, pins)
    aid = action_id(did, TXN_DISPOSITION)
    base = {k: pins[k] for k in PINS_KEYS}

    def envelope(event_id: str, event_type: str, ts: datetime, parent: str, payload: Any) -> bytes:
        import msgspec

        return encode_envelope(Envelope(event_id=event_id, event_type=event_type, schema_version="v1",
                                        ts_utc=_ts(ts), producer="svc:test_decision_lane", parent_event_id=parent,
                                        payload=msgspec.to_builtins(payload), **base))

    decision = DecisionPayload(
        decision_id=did, source_event=SourceEvent(event_id=traffic_event_id, event_type="AUTH_REQUEST",
                                                  ts_utc=_ts(admitted), stream=stream, shard_id="shardId-000000000000",
                                                  sequence_number="1"),
        flow_id=flow_id, action=action, score=0.5, reason_codes=[], rules_fired=[], top_features=[],  # type: ignore[arg-type]
        bundle=BundleRef(bundle_id="test", version="1", digest="0" * 64), features=FeatureBasis(),
        posture=PostureRef(mode="NORMAL", posture_seq=0), context_status="COMPLETE",
        timings=DecisionTimings(admitted_at_utc=_ts(admitted), decided_at_utc=_ts(decided),
                                admit_to_decision_ms=decide_ms), run_config_digest="0" * 64)
    decision_event_id = decision_response_event_id(traffic_event_id, pins)
    intent_event_id = action_intent_event_id(traffic_event_id, TXN_DISPOSITION, pins)
    intent = ActionIntentPayload(action_id=aid, decision_id=did, action_kind=kind, idempotency_key=idem,  # type: ignore[arg-type]
                                 source_event_id=traffic_event_id, flow_id=flow_id, reason_ref=did,
                                 admitted_at_utc=_ts(admitted), decided_at_utc=_ts(decided),
                                 requested_at_utc=_ts(decided))
    oid = action_outcome_id(did, aid, idem)
    outcome = ActionOutcomePayload(outcome_id=oid, action_id=aid, decision_id=did, action_kind=kind,  # type: ignore[arg-type]
                                   idempotency_key=idem, status=outcome_status, reason_code="OK",  # type: ignore[arg-type]
                                   attempts=[Attempt(attempt_seq=1, state="SUCCEEDED", provider_code="200")],
                                   source_event_id=traffic_event_id, admitted_at_utc=_ts(admitted),
                                   decided_at_utc=_ts(decided), requested_at_utc=_ts(decided),
                                   completed_at_utc=_ts(completed))
    audit = AuditRecordPayload(audit_id=audit_chain_id(run, did), decision_id=did, source_event_id=traffic_event_id,
                               action=action, chain_status="RESOLVED", intent_ids=[aid], outcome_ids=[oid],  # type: ignore[arg-type]
                               outcome_statuses=[outcome_status], admitted_at_utc=_ts(admitted),  # type: ignore[list-item]
                               decided_at_utc=_ts(decided), audited_at_utc=_ts(audited), admit_to_audit_ms=audit_ms)
    return Chain(
        decision_id=did,
        decision=envelope(decision_event_id, DECISION_RESPONSE, decided, traffic_event_id, decision),
        intent=envelope(intent_event_id, ACTION_INTENT, decided, decision_event_id, intent),
        outcome=envelope(oid, ACTION_OUTCOME, completed, intent_event_id, outcome),
        audit=envelope(audit_chain_id(run, did), AUDIT_RECORD, audited, decision_event_id, audit))


def case_trigger(pins: dict[str, Any], decision: str, at: datetime) -> bytes:
    base = {k: pins[k] for k in PINS_KEYS}
    return encode_envelope(Envelope(event_id=f"ct-{decision}", event_type=CASE_TRIGGER, schema_version="v1",
                                    ts_utc=_ts(at), producer="svc:test_case_trigger", payload={"decision": decision},
                                    **base))


def at(second: int, ms: int = 0) -> datetime:
    return datetime(2031, 6, 1, 12, 0, 0, tzinfo=UTC) + timedelta(seconds=second, milliseconds=ms)
