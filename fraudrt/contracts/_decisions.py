"""The decision lane's messages: decision responses, action intents and outcomes on `fp.bus.rtdl.v1`,
audit records on `fp.bus.audit.v1`, case triggers on `fp.bus.case.v1`.

Each travels as the payload of a canonical envelope (`Envelope`, `event_type` below, schema version
`v1`) whose pins are copied from the traffic event it descends from, and whose `parent_event_id` is
its immediate parent's event id (decision -> traffic event, intent -> decision, outcome -> intent,
audit -> decision, case trigger -> its decision or outcome). Every payload also carries
`admitted_at_utc`: when IG published the traffic event it descends from (the record's arrival time
on the bus), so every hop can measure latency from admission (DESIGN §10).

Payloads are closed (`forbid_unknown_fields`): a producer and a consumer agree on them field by
field, and a consumer decodes straight into these structs (`decode_payload`). Ground truth never
appears in any of them.

Ids (`_ids.py`): `decision_id` depends only on the run, the source event and the decision scope (never
on posture or bundle, so a replay under other conditions is the same decision); an intent's event
id, idempotency key and action id use the action *domain* (`txn_disposition`), not the action
chosen, so one source event has exactly one disposition intent whatever was decided; an outcome's
id depends only on its intent, so each intent has exactly one outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec

from ._envelope import Envelope, EnvelopeError, encode_envelope
from ._formats import Hex32, Hex64, ScenarioId, Seed, TsUtc

SCHEMA_VERSION: Final = "v1"
DECISION_RESPONSE: Final = "decision_response"
ACTION_INTENT: Final = "action_intent"
ACTION_OUTCOME: Final = "action_outcome"
AUDIT_RECORD: Final = "audit_record"
CASE_TRIGGER: Final = "case_trigger"

DECISION_SCOPE: Final = "fraud.primary"
# The one action domain of a decision: the disposition of the transaction.
TXN_DISPOSITION: Final = "txn_disposition"

Action = Literal["APPROVE", "STEP_UP", "REVIEW", "DECLINE"]
ACTIONS: Final[tuple[str, ...]] = ("APPROVE", "STEP_UP", "REVIEW", "DECLINE")
# What the Action Layer is asked to do for each decision.
ActionKind = Literal["APPROVE_TXN", "REQUEST_STEP_UP", "HOLD_FOR_REVIEW", "DECLINE_TXN"]
ACTION_KIND_OF: Final[dict[str, str]] = {
    "APPROVE": "APPROVE_TXN", "STEP_UP": "REQUEST_STEP_UP", "REVIEW": "HOLD_FOR_REVIEW", "DECLINE": "DECLINE_TXN",
}
PostureMode = Literal["NORMAL", "DEGRADED_1", "DEGRADED_2", "FAIL_CLOSED"]
POSTURE_MODES: Final[tuple[str, ...]] = ("NORMAL", "DEGRADED_1", "DEGRADED_2", "FAIL_CLOSED")
ContextStatus = Literal["COMPLETE", "CONTEXT_MISSING"]
OutcomeStatus = Literal["EXECUTED", "FAILED", "DENIED"]
ChainStatus = Literal["RESOLVED", "UNRESOLVED"]


class _Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=False):
    pass


class SourceEvent(_Payload, frozen=True, kw_only=True):
    """The traffic event a decision answers, and where it was read."""

    event_id: str
    event_type: str
    ts_utc: TsUtc
    stream: str
    shard_id: str
    sequence_number: str


class BundleRef(_Payload, frozen=True, kw_only=True):
    """The policy bundle that decided: content-addressed (`digest` = sha256 of its canonical bytes)."""

    bundle_id: str
    version: str
    digest: Hex64


class PostureRef(_Payload, frozen=True, kw_only=True):
    mode: PostureMode
    posture_seq: int
    decided_at_utc: TsUtc | None = None
    policy_digest: str | None = None


class Contribution(_Payload, frozen=True, kw_only=True):
    """One feature's part in the score: its value and its contribution to the log-odds."""

    name: str
    value: float
    contribution: float


class FeatureBasis(_Payload, frozen=True, kw_only=True):
    """What the features were read as: definitions and snapshot digests and the projectors' progress."""

    definitions_digest: str | None = None
    snapshot_digest: str | None = None
    ofp_watermark_utc: TsUtc | None = None
    graph_version: str | None = None


class DecisionTimings(_Payload, frozen=True, kw_only=True):
    admitted_at_utc: TsUtc
    decided_at_utc: TsUtc
    admit_to_decision_ms: float
    waited_ms: float = 0.0


class DecisionPayload(_Payload, frozen=True, kw_only=True):
    decision_id: Hex32
    decision_scope: str = DECISION_SCOPE
    source_event: SourceEvent
    flow_id: int
    action: Action
    # The model's probability of fraud; None when the posture allowed rules only.
    score: float | None
    reason_codes: list[str]
    rules_fired: list[str]
    top_features: list[Contribution]
    bundle: BundleRef
    features: FeatureBasis
    posture: PostureRef
    context_status: ContextStatus
    missing_context: list[str] = msgspec.field(default_factory=list)
    timings: DecisionTimings
    run_config_digest: Hex64


class ActionIntentPayload(_Payload, frozen=True, kw_only=True):
    action_id: Hex32
    decision_id: Hex32
    action_domain: str = TXN_DISPOSITION
    action_kind: ActionKind
    idempotency_key: Hex64
    source_event_id: str
    flow_id: int
    actor_principal: str = "SYSTEM::decision_fabric"
    origin: str = "DF"
    reason_ref: str
    admitted_at_utc: TsUtc
    decided_at_utc: TsUtc
    requested_at_utc: TsUtc


class Attempt(_Payload, frozen=True, kw_only=True):
    attempt_seq: int
    state: Literal["SUCCEEDED", "TRANSIENT_FAILURE", "PERMANENT_FAILURE", "DENIED"]
    provider_code: str
    latency_ms: float = 0.0


class ActionOutcomePayload(_Payload, frozen=True, kw_only=True):
    outcome_id: Hex32
    action_id: Hex32
    decision_id: Hex32
    action_kind: ActionKind
    idempotency_key: Hex64
    status: OutcomeStatus
    reason_code: str
    attempts: list[Attempt]
    provider_ref: str | None = None
    source_event_id: str
    admitted_at_utc: TsUtc
    decided_at_utc: TsUtc
    requested_at_utc: TsUtc
    completed_at_utc: TsUtc


class AuditRecordPayload(_Payload, frozen=True, kw_only=True):
    """One decision's chain as the Decision Log/Audit holds it, published when the chain is resolved
    (or when its grace period ends unresolved)."""

    audit_id: Hex32
    decision_id: Hex32
    source_event_id: str
    action: Action
    chain_status: ChainStatus
    unresolved_reasons: list[str] = msgspec.field(default_factory=list)
    intent_ids: list[str] = msgspec.field(default_factory=list)
    outcome_ids: list[str] = msgspec.field(default_factory=list)
    outcome_statuses: list[OutcomeStatus] = msgspec.field(default_factory=list)
    segment_ref: str | None = None
    admitted_at_utc: TsUtc
    decided_at_utc: TsUtc
    audited_at_utc: TsUtc
    admit_to_audit_ms: float
    # A chain that resolves after its UNRESOLVED record was published gets a second, RESOLVED record
    # (another event id, `audit_record_event_id`) naming the event id it supersedes.
    supersedes_event_id: str | None = None


_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    DECISION_RESPONSE: msgspec.json.Decoder(DecisionPayload),
    ACTION_INTENT: msgspec.json.Decoder(ActionIntentPayload),
    ACTION_OUTCOME: msgspec.json.Decoder(ActionOutcomePayload),
    AUDIT_RECORD: msgspec.json.Decoder(AuditRecordPayload),
}


class DecisionLaneEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope fields a decision-lane consumer needs, with the payload left raw for `decode_payload`.

    The pins are here so a consumer that derives an event (an outcome from an intent, an audit
    record from a chain) copies them without decoding the envelope a second time.
    """

    event_id: str
    event_type: str
    schema_version: str | None = None
    ts_utc: str
    platform_run_id: str | None = None
    scenario_run_id: str | None = None
    manifest_fingerprint: Hex64 | None = None
    parameter_hash: Hex64 | None = None
    seed: Seed | None = None
    scenario_id: ScenarioId | None = None
    run_id: Hex32 | None = None
    parent_event_id: str | None = None
    payload: msgspec.Raw

    def pin_values(self) -> dict[str, Any]:
        """The run pins this event carries (absent ones left out): what a derived event copies."""
        return {k: v for k in PIN_FIELDS if (v := getattr(self, k)) is not None}


# The envelope fields a derived decision-lane event copies from its parent.
PIN_FIELDS: Final[tuple[str, ...]] = ("platform_run_id", "scenario_run_id", "manifest_fingerprint",
                                      "parameter_hash", "seed", "scenario_id", "run_id")

lane_event_decoder: Final = msgspec.json.Decoder(DecisionLaneEvent)


def derived_envelope(pins: Mapping[str, Any], *, event_id: str, event_type: str, ts_utc: str, producer: str,
                     parent_event_id: str | None, payload: msgspec.Struct) -> bytes:
    """An encoded envelope of a decision-lane event derived from a parent whose `pins` it copies.

    Raises `EnvelopeError` when the pins lack `manifest_fingerprint` (every envelope carries it).
    """
    if not pins.get("manifest_fingerprint"):
        raise EnvelopeError("manifest_fingerprint", "required field is missing (the parent carried none)")
    env = Envelope(event_id=event_id, event_type=event_type, schema_version=SCHEMA_VERSION, ts_utc=ts_utc,
                   producer=producer, parent_event_id=parent_event_id, payload=msgspec.to_builtins(payload),
                   **{k: pins[k] for k in PIN_FIELDS if pins.get(k) is not None})
    return encode_envelope(env)


def decode_payload(event: DecisionLaneEvent) -> Any:
    """The typed payload of a decision-lane event (raises msgspec errors on a contract breach)."""
    decoder = _DECODERS.get(event.event_type)
    if decoder is None:
        raise msgspec.ValidationError(f"not a decision-lane event type: {event.event_type!r}")
    return decoder.decode(event.payload)
