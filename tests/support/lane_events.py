"""Valid decision-lane envelopes from a few parameters: what the Decision Fabric and the Action Layer
would put on `fp.bus.rtdl.v1`, with every id from the contract's recipes.

`chain(run, n)` is the n-th traffic event's decision and its one intent; `outcome(chain, ...)` the
outcome the Action Layer would publish for that intent. Tests put these on private streams in any
order, as many times as they like.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from fraudrt.contracts import (
    ACTION_INTENT,
    ACTION_KIND_OF,
    ACTION_OUTCOME,
    DECISION_RESPONSE,
    TXN_DISPOSITION,
    ActionIntentPayload,
    ActionOutcomePayload,
    Attempt,
    BundleRef,
    DecisionPayload,
    DecisionTimings,
    FeatureBasis,
    PostureRef,
    SourceEvent,
    action_id,
    action_idempotency_key,
    action_intent_event_id,
    action_outcome_id,
    decision_id,
    decision_response_event_id,
    derived_envelope,
    format_ts_utc,
    utc_now_ts,
)


def pins_for(run: str) -> dict[str, Any]:
    """The pins every event of `run` carries (as the traffic event they descend from)."""
    scenario_run = hashlib.sha256(f"sr|{run}".encode()).hexdigest()[:32]
    return {"platform_run_id": run, "scenario_run_id": scenario_run,
            "manifest_fingerprint": hashlib.sha256(b"mf").hexdigest(),
            "parameter_hash": hashlib.sha256(b"ph").hexdigest(), "seed": 42, "scenario_id": "baseline_v1",
            "run_id": scenario_run}


def source_event_id(run: str, n: int) -> str:
    return hashlib.sha256(f"traffic|{run}|{n}".encode()).hexdigest()


@dataclass(frozen=True)
class Chain:
    run: str
    n: int
    source_event_id: str
    decision_id: str
    decision_event_id: str
    intent_event_id: str
    idempotency_key: str
    action_id: str
    action: str
    action_kind: str
    admitted_at_utc: str
    decided_at_utc: str
    decision: bytes
    intent: bytes

    @property
    def outcome_id(self) -> str:
        return action_outcome_id(self.decision_id, self.action_id, self.idempotency_key)


def chain(run: str, n: int, *, action: str = "APPROVE", admitted_at_utc: str | None = None,
          origin: str = "DF", actor_principal: str = "SYSTEM::decision_fabric") -> Chain:
    """The decision on traffic event `n` of `run` and its one disposition intent."""
    pins = pins_for(run)
    src = source_event_id(run, n)
    did = decision_id(run, src)
    now = utc_now_ts()
    admitted = admitted_at_utc or now
    dec_event = decision_response_event_id(src, pins)
    decision = DecisionPayload(
        decision_id=did, source_event=SourceEvent(event_id=src, event_type="s3_event_stream_with_fraud_6B",
                                                  ts_utc=format_ts_utc_of(n), stream="fp.bus.traffic.fraud.v1",
                                                  shard_id="shardId-000000000000", sequence_number=str(n + 1)),
        flow_id=n, action=action, score=0.01 * (n % 100), reason_codes=["SCORE_BAND"], rules_fired=[],  # type: ignore[arg-type]
        top_features=[], bundle=BundleRef(bundle_id="test_bundle", version="v0", digest="0" * 64),
        features=FeatureBasis(), posture=PostureRef(mode="NORMAL", posture_seq=1), context_status="COMPLETE",
        timings=DecisionTimings(admitted_at_utc=admitted, decided_at_utc=now, admit_to_decision_ms=0.0),
        run_config_digest="1" * 64)
    kind = ACTION_KIND_OF[action]
    key = action_idempotency_key(src, TXN_DISPOSITION, pins)
    aid = action_id(did, TXN_DISPOSITION)
    intent_event = action_intent_event_id(src, TXN_DISPOSITION, pins)
    intent = ActionIntentPayload(
        action_id=aid, decision_id=did, action_kind=kind, idempotency_key=key, source_event_id=src,  # type: ignore[arg-type]
        flow_id=n, actor_principal=actor_principal, origin=origin, reason_ref=f"decision://{did}",
        admitted_at_utc=admitted, decided_at_utc=now, requested_at_utc=now)
    return Chain(
        run=run, n=n, source_event_id=src, decision_id=did, decision_event_id=dec_event,
        intent_event_id=intent_event, idempotency_key=key, action_id=aid, action=action, action_kind=kind,
        admitted_at_utc=admitted, decided_at_utc=now,
        decision=derived_envelope(pins, event_id=dec_event, event_type=DECISION_RESPONSE, ts_utc=now,
                                  producer="decision_fabric", parent_event_id=src, payload=decision),
        intent=derived_envelope(pins, event_id=intent_event, event_type=ACTION_INTENT, ts_utc=now,
                                producer="decision_fabric", parent_event_id=dec_event, payload=intent))


def format_ts_utc_of(n: int) -> str:
    """A simulated event time for traffic event n."""
    return format_ts_utc(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n))


def outcome(c: Chain, *, status: str = "EXECUTED", reason_code: str = "OK") -> bytes:
    """The outcome the Action Layer would publish for `c`'s intent."""
    now = utc_now_ts()
    payload = ActionOutcomePayload(
        outcome_id=c.outcome_id, action_id=c.action_id, decision_id=c.decision_id, action_kind=c.action_kind,  # type: ignore[arg-type]
        idempotency_key=c.idempotency_key, status=status, reason_code=reason_code,  # type: ignore[arg-type]
        attempts=[Attempt(attempt_seq=1, state="SUCCEEDED", provider_code="OK")], source_event_id=c.source_event_id,
        admitted_at_utc=c.admitted_at_utc, decided_at_utc=c.decided_at_utc, requested_at_utc=c.decided_at_utc,
        completed_at_utc=now)
    return derived_envelope(pins_for(c.run), event_id=c.outcome_id, event_type=ACTION_OUTCOME, ts_utc=now,
                            producer="action_layer", parent_event_id=c.intent_event_id, payload=payload)


def with_payload(envelope: bytes, **changes: Any) -> bytes:
    """A changed copy of an envelope (same event id): its payload fields replaced by `changes`."""
    doc = msgspec.json.decode(envelope)
    doc["payload"] = {**doc["payload"], **changes}
    return msgspec.json.encode(doc)


def with_event_id(envelope: bytes, event_id: str) -> bytes:
    """The same envelope under another event id (another event claiming the same thing)."""
    doc = msgspec.json.decode(envelope)
    doc["event_id"] = event_id
    return msgspec.json.encode(doc)
