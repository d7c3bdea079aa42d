"""The traffic record DF reads, and the decision and intent envelopes it emits.

The source struct names only what DF may use (pins, ids, the request's amount); ground truth rides on
the record and is simply not a field here. Emitted envelopes are pinned like their source; the
decision's parent is the traffic event, the intent's parent the decision; both are keyed by the
decision id, so a decision and its intent land on one shard in that order.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from fraudrt.contracts import (
    ACTION_INTENT,
    ACTION_KIND_OF,
    DECISION_RESPONSE,
    SCHEMA_VERSION,
    TXN_DISPOSITION,
    ActionIntentPayload,
    DecisionPayload,
    Envelope,
    action_id,
    action_idempotency_key,
    action_intent_event_id,
    decision_response_event_id,
    encode_envelope,
)
from fraudrt.rtdl._inputs import TrafficPayload

PRODUCER: Final = "decision_fabric"


class TrafficRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A traffic envelope as DF reads it: pins and the truth-free payload."""

    event_id: str
    event_type: str
    ts_utc: str
    platform_run_id: str | None = None
    scenario_run_id: str | None = None
    manifest_fingerprint: str | None = None
    parameter_hash: str | None = None
    seed: int | None = None
    scenario_id: str | None = None
    run_id: str | None = None
    trace_id: str | None = None
    payload: TrafficPayload

    def pins(self) -> dict[str, Any]:
        return {"platform_run_id": self.platform_run_id, "scenario_run_id": self.scenario_run_id,
                "manifest_fingerprint": self.manifest_fingerprint, "parameter_hash": self.parameter_hash,
                "seed": self.seed, "scenario_id": self.scenario_id}


traffic_record_decoder: Final = msgspec.json.Decoder(TrafficRecord)


def _envelope(source: TrafficRecord, *, event_id: str, event_type: str, ts_utc: str, parent: str,
              payload: dict[str, Any]) -> bytes:
    assert source.manifest_fingerprint is not None  # checked at intake
    return encode_envelope(Envelope(
        event_id=event_id, event_type=event_type, schema_version=SCHEMA_VERSION, ts_utc=ts_utc,
        platform_run_id=source.platform_run_id, scenario_run_id=source.scenario_run_id,
        manifest_fingerprint=source.manifest_fingerprint, parameter_hash=source.parameter_hash, seed=source.seed,
        scenario_id=source.scenario_id, run_id=source.run_id, producer=PRODUCER, parent_event_id=parent,
        trace_id=source.trace_id, payload=payload))


def decision_envelopes(source: TrafficRecord, decision: DecisionPayload,
                       decision_doc: dict[str, Any]) -> tuple[str, bytes, str, bytes]:
    """(decision event id, decision envelope, intent event id, intent envelope); `decision_doc` is the
    decision as builtins (computed once by the caller, who also digests it)."""
    pins = source.pins()
    decided = decision.timings.decided_at_utc
    decision_event = decision_response_event_id(source.event_id, pins)
    intent = ActionIntentPayload(
        action_id=action_id(decision.decision_id, TXN_DISPOSITION), decision_id=decision.decision_id,
        action_kind=ACTION_KIND_OF[decision.action],  # type: ignore[arg-type]
        idempotency_key=action_idempotency_key(source.event_id, TXN_DISPOSITION, pins),
        source_event_id=source.event_id, flow_id=decision.flow_id, reason_ref=f"decision://{decision.decision_id}",
        admitted_at_utc=decision.timings.admitted_at_utc, decided_at_utc=decided, requested_at_utc=decided)
    intent_event = action_intent_event_id(source.event_id, TXN_DISPOSITION, pins)
    return (decision_event, _envelope(source, event_id=decision_event, event_type=DECISION_RESPONSE, ts_utc=decided,
                                      parent=source.event_id, payload=decision_doc),
            intent_event, _envelope(source, event_id=intent_event, event_type=ACTION_INTENT, ts_utc=decided,
                                    parent=decision_event, payload=msgspec.to_builtins(intent)))
