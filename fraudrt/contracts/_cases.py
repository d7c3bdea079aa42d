"""The case + labels plane's messages on `fp.bus.case.v1`: case triggers and label assertions.

Both travel as the payload of a canonical envelope (schema version `v1`) whose pins are the pins of
the traffic event they descend from:

- `case_trigger` (CaseTrigger -> Case Management): one piece of decision-lane evidence that needs a
  person: an escalated decision, a failed action, an audit chain left unresolved. Envelope
  `event_id` = `case_trigger_id`; partition key = `case_id`, so one case's triggers stay in order.
- `label_assertion` (Case Management, the chargeback feed -> Label Store): a statement that an event
  is (or is not) fraud, by a person (`HUMAN`), an outside party (`EXTERNAL`) or the platform itself
  (`AUTO`, never training data). Envelope `event_id` = `label_assertion_id`; partition key = the
  label subject, so one subject's assertions stay in order.

Ids and hashes are the reference's recipes (`_ids.py`, case_operate_obs.md §1.3), derived here by
the `make_*` constructors and checked again by the consumer (`*_problem`): a payload whose ids or
hash do not follow from its content is refused, never trusted. Payloads are closed.

Two clocks are kept apart (critique #9): `event_time` / `effective_time` are the world's clock (the
traffic event's `ts_utc`); `observed_time` is when the evidence or the label became known to the
platform (a decision's `decided_at_utc`, an investigator's wall clock, a chargeback's arrival).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

from ._decisions import CASE_TRIGGER, SCHEMA_VERSION, Action, Contribution
from ._envelope import Envelope, encode_envelope
from ._formats import Hex32, Hex64, PlatformRunId, TsUtc
from ._ids import (
    case_id,
    case_trigger_id,
    case_trigger_payload_hash,
    label_assertion_id,
    label_assertion_payload_hash,
)
from ._pins import Pins
from ._time import is_ts_utc

LABEL_ASSERTION: Final = "label_assertion"

TriggerType = Literal["DECISION_ESCALATION", "ACTION_FAILURE", "ANOMALY", "EXTERNAL_SIGNAL", "MANUAL_ASSERTION"]
TRIGGER_TYPES: Final[tuple[str, ...]] = ("DECISION_ESCALATION", "ACTION_FAILURE", "ANOMALY", "EXTERNAL_SIGNAL",
                                         "MANUAL_ASSERTION")
EvidenceRefType = Literal["DLA_AUDIT_RECORD", "DECISION", "ACTION_OUTCOME", "EB_ORIGIN_OFFSET", "CASE_EVENT",
                          "EXTERNAL_REF"]
# The evidence a trigger of each type must carry (the reference's policy, minus the audit record
# it fabricated for decisions and outcomes: critique #5).
REQUIRED_EVIDENCE: Final[dict[str, str]] = {
    "DECISION_ESCALATION": "DECISION", "ACTION_FAILURE": "ACTION_OUTCOME", "ANOMALY": "DLA_AUDIT_RECORD",
    "EXTERNAL_SIGNAL": "EXTERNAL_REF", "MANUAL_ASSERTION": "EXTERNAL_REF",
}
SourceType = Literal["HUMAN", "EXTERNAL", "AUTO"]
SOURCE_TYPES: Final[tuple[str, ...]] = ("HUMAN", "EXTERNAL", "AUTO")
LabelType = Literal["fraud_disposition", "chargeback_status", "account_takeover"]
LABEL_VALUES: Final[dict[str, tuple[str, ...]]] = {
    "fraud_disposition": ("FRAUD_CONFIRMED", "FRAUD_SUSPECTED", "LEGIT_CONFIRMED"),
    "chargeback_status": ("CHARGEBACK", "NO_CHARGEBACK", "PENDING"),
    "account_takeover": ("ATO_CONFIRMED", "ATO_SUSPECTED", "ATO_NOT_CONFIRMED"),
}
CaseState = Literal["OPEN", "IN_REVIEW", "RESOLVED"]
CASE_STATES: Final[tuple[str, ...]] = ("OPEN", "IN_REVIEW", "RESOLVED")
TimelineEventType = Literal["CASE_TRIGGERED", "CASE_ASSIGNED", "NOTE_ADDED", "LABEL_ASSERTED", "CASE_RESOLVED"]
TIMELINE_EVENT_TYPES: Final[tuple[str, ...]] = ("CASE_TRIGGERED", "CASE_ASSIGNED", "NOTE_ADDED", "LABEL_ASSERTED",
                                                "CASE_RESOLVED")
Resolution = Literal["FRAUD_CONFIRMED", "LEGIT_CONFIRMED", "INCONCLUSIVE"]
RESOLUTIONS: Final[tuple[str, ...]] = ("FRAUD_CONFIRMED", "LEGIT_CONFIRMED", "INCONCLUSIVE")
# A case's subject: the traffic event a flow's decision answers (`auth_request`: one case per
# flow), or one entity of the flow (`entity:party`, ...: one case per entity).
FLOW_SUBJECT: Final = "auth_request"
ENTITY_SUBJECTS: Final[tuple[str, ...]] = ("party", "account", "instrument", "device", "ip")

# Actor ids: `HUMAN::<name>`, `EXTERNAL::<provider>`, `SYSTEM::<component>`; names are plain tokens.
ACTOR_ID_PATTERN: Final = r"^(HUMAN|EXTERNAL|SYSTEM)::[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z"
ActorId = Annotated[str, msgspec.Meta(pattern=ACTOR_ID_PATTERN)]
RefId = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
SourceRefId = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class _Case(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class EvidenceRef(_Case, frozen=True, kw_only=True, omit_defaults=True):
    ref_type: EvidenceRefType
    ref_id: RefId
    ref_scope: str | None = None


class CaseSubjectKey(_Case, frozen=True, kw_only=True):
    platform_run_id: PlatformRunId
    event_class: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class TriggerDetails(_Case, frozen=True, kw_only=True, omit_defaults=True):
    """What an investigator needs from the evidence without another lookup (hashed with the trigger)."""

    event_time: TsUtc  # the traffic event's time (the world's clock)
    source_event_id: str
    escalation_reasons: list[str]
    flow_id: int | None = None
    decision_id: Hex32 | None = None
    action: Action | None = None
    score: float | None = None
    reason_codes: list[str] = msgspec.field(default_factory=list)
    rules_fired: list[str] = msgspec.field(default_factory=list)
    top_features: list[Contribution] = msgspec.field(default_factory=list)
    bundle_digest: str | None = None
    posture: str | None = None
    context_status: str | None = None
    outcome_id: Hex32 | None = None
    action_kind: str | None = None
    outcome_status: str | None = None
    outcome_reason_code: str | None = None
    audit_id: Hex32 | None = None
    chain_status: str | None = None
    unresolved_reasons: list[str] = msgspec.field(default_factory=list)


class CaseTriggerPayload(_Case, frozen=True, kw_only=True):
    case_id: Hex32
    case_trigger_id: Hex32
    trigger_type: TriggerType
    source_ref_id: SourceRefId
    case_subject_key: CaseSubjectKey
    pins: Pins
    evidence_refs: list[EvidenceRef]
    observed_time: TsUtc  # when the evidence was produced (DF/AL/DLA's clock)
    payload_hash: Hex64
    trigger_payload: TriggerDetails


class LabelSubjectKey(_Case, frozen=True, kw_only=True):
    platform_run_id: PlatformRunId
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class LabelAssertionPayload(_Case, frozen=True, kw_only=True):
    label_assertion_id: Hex32
    case_timeline_event_id: Hex32
    label_subject_key: LabelSubjectKey
    pins: Pins
    label_type: LabelType
    label_value: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    effective_time: TsUtc  # when the label is true of the world (the event's time)
    observed_time: TsUtc  # when its source knew it
    source_type: SourceType
    actor_id: ActorId | None = None
    evidence_refs: list[EvidenceRef]
    payload_hash: Hex64
    case_id: Hex32 | None = None
    # Not hashed (as in the reference): notes for people, e.g. the chargeback provider.
    label_payload: dict[Annotated[str, msgspec.Meta(max_length=64)],
                        Annotated[str, msgspec.Meta(max_length=2000)]] = msgspec.field(default_factory=dict)


def _refs(refs: Iterable[EvidenceRef]) -> list[EvidenceRef]:
    return sorted(refs, key=lambda r: (r.ref_type, r.ref_id, r.ref_scope or ""))


def _b(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


def _trigger_hash(subject: CaseSubjectKey, trigger_type: str, source_ref_id: str, pins: Pins, observed_time: str,
                  refs: Sequence[EvidenceRef], details: TriggerDetails) -> str:
    return case_trigger_payload_hash(
        case_subject_key=_b(subject), trigger_type=trigger_type, source_ref_id=source_ref_id, pins=_b(pins),
        observed_time=observed_time, evidence_refs=_b(list(refs)), trigger_payload=_b(details))


def make_case_trigger(*, trigger_type: TriggerType, source_ref_id: str, subject: CaseSubjectKey, pins: Pins,
                      evidence_refs: Iterable[EvidenceRef], observed_time: str,
                      details: TriggerDetails) -> CaseTriggerPayload:
    """A trigger with its ids and hash derived from its content."""
    cid = case_id(subject.platform_run_id, subject.event_class, subject.event_id)
    refs = _refs(evidence_refs)
    return CaseTriggerPayload(
        case_id=cid, case_trigger_id=case_trigger_id(cid, trigger_type, source_ref_id), trigger_type=trigger_type,
        source_ref_id=source_ref_id, case_subject_key=subject, pins=pins, evidence_refs=refs,
        observed_time=observed_time,
        payload_hash=_trigger_hash(subject, trigger_type, source_ref_id, pins, observed_time, refs, details),
        trigger_payload=details)


def _bad_time(*values: str) -> str | None:
    """The first value that matches the ts_utc pattern but is no calendar time (a Feb 30, a year 0):
    the decoder's pattern lets those through, and Postgres would refuse them in the middle of a batch."""
    return next((v for v in values if not is_ts_utc(v)), None)


def trigger_problem(p: CaseTriggerPayload) -> str | None:
    """Why a decoded trigger cannot be taken (a reason code with detail), or None."""
    s = p.case_subject_key
    bad = _bad_time(p.observed_time, p.trigger_payload.event_time)
    if bad is not None:
        return f"TIME_INVALID: {bad!r} is not a calendar time"
    if s.platform_run_id != p.pins.platform_run_id:
        return "SUBJECT_RUN_MISMATCH: the case subject's run is not the pins' run"
    if not any(r.ref_type == REQUIRED_EVIDENCE[p.trigger_type] for r in p.evidence_refs):
        return f"MISSING_EVIDENCE_REFS: a {p.trigger_type} trigger needs a {REQUIRED_EVIDENCE[p.trigger_type]} ref"
    cid = case_id(s.platform_run_id, s.event_class, s.event_id)
    if p.case_id != cid:
        return "CASE_ID_MISMATCH: case_id does not follow from the case subject"
    if p.case_trigger_id != case_trigger_id(cid, p.trigger_type, p.source_ref_id):
        return "TRIGGER_ID_MISMATCH: case_trigger_id does not follow from (case_id, trigger_type, source_ref_id)"
    if p.payload_hash != _trigger_hash(s, p.trigger_type, p.source_ref_id, p.pins, p.observed_time,
                                       _refs(p.evidence_refs), p.trigger_payload):
        return "PAYLOAD_HASH_MISMATCH: payload_hash does not follow from the trigger's content"
    return None


def _label_hash(subject: LabelSubjectKey, label_type: str, label_value: str, effective_time: str,
                observed_time: str, source_type: str, actor_id: str | None, refs: Sequence[EvidenceRef]) -> str:
    return label_assertion_payload_hash(
        platform_run_id=subject.platform_run_id, event_id=subject.event_id, label_type=label_type,
        label_value=label_value, effective_time=effective_time, observed_time=observed_time,
        source_type=source_type, actor_id=actor_id, evidence_refs=_b(list(refs)))


def make_label_assertion(*, case_timeline_event_id: str, subject: LabelSubjectKey, pins: Pins,
                         label_type: LabelType, label_value: str, effective_time: str, observed_time: str,
                         source_type: SourceType, actor_id: str | None, evidence_refs: Iterable[EvidenceRef],
                         case_id: str | None = None,
                         label_payload: dict[str, str] | None = None) -> LabelAssertionPayload:
    """An assertion with its id and hash derived from its content (the value is not in the id: a
    changed verdict for the same timeline event is a mismatch, not a second assertion)."""
    refs = _refs(evidence_refs)
    return LabelAssertionPayload(
        label_assertion_id=label_assertion_id(case_timeline_event_id, subject.platform_run_id, subject.event_id,
                                              label_type),
        case_timeline_event_id=case_timeline_event_id, label_subject_key=subject, pins=pins, label_type=label_type,
        label_value=label_value, effective_time=effective_time, observed_time=observed_time,
        source_type=source_type, actor_id=actor_id, evidence_refs=refs,
        payload_hash=_label_hash(subject, label_type, label_value, effective_time, observed_time, source_type,
                                 actor_id, refs),
        case_id=case_id, label_payload=dict(label_payload or {}))


def label_problem(p: LabelAssertionPayload) -> str | None:
    """Why a decoded assertion cannot be taken (reason code with detail), or None."""
    s = p.label_subject_key
    bad = _bad_time(p.effective_time, p.observed_time)
    if bad is not None:
        return f"TIME_INVALID: {bad!r} is not a calendar time"
    if s.platform_run_id != p.pins.platform_run_id:
        return "SUBJECT_RUN_MISMATCH: the label subject's run is not the pins' run"
    if not p.evidence_refs:
        return "MISSING_EVIDENCE_REFS: an assertion must say what it rests on"
    if p.label_value not in LABEL_VALUES[p.label_type]:
        return f"LABEL_VALUE_INVALID: {p.label_value!r} is not a {p.label_type} value {LABEL_VALUES[p.label_type]}"
    if p.source_type == "HUMAN" and not (p.actor_id or "").startswith("HUMAN::"):
        return "ACTOR_REQUIRED: a HUMAN assertion names its HUMAN:: actor"
    if p.label_assertion_id != label_assertion_id(p.case_timeline_event_id, s.platform_run_id, s.event_id,
                                                  p.label_type):
        return "LABEL_ASSERTION_ID_MISMATCH: the id does not follow from (timeline event, subject, label type)"
    if p.payload_hash != _label_hash(s, p.label_type, p.label_value, p.effective_time, p.observed_time,
                                     p.source_type, p.actor_id, _refs(p.evidence_refs)):
        return "PAYLOAD_HASH_MISMATCH: payload_hash does not follow from the assertion's content"
    return None


def case_envelope(payload: CaseTriggerPayload | LabelAssertionPayload, *, ts_utc: str, producer: str,
                  parent_event_id: str | None = None) -> tuple[str, str, bytes]:
    """(event_id, partition key, envelope bytes) of a case-stream event, pinned like its source."""
    if isinstance(payload, CaseTriggerPayload):
        event_type, event_id, key = CASE_TRIGGER, payload.case_trigger_id, payload.case_id
    else:
        s = payload.label_subject_key
        event_type, event_id, key = LABEL_ASSERTION, payload.label_assertion_id, f"{s.platform_run_id}|{s.event_id}"
    p = payload.pins
    env = Envelope(event_id=event_id, event_type=event_type, schema_version=SCHEMA_VERSION, ts_utc=ts_utc,
                   platform_run_id=p.platform_run_id, scenario_run_id=p.scenario_run_id,
                   manifest_fingerprint=p.manifest_fingerprint, parameter_hash=p.parameter_hash, seed=p.seed,
                   scenario_id=p.scenario_id, run_id=p.run_id, producer=producer, parent_event_id=parent_event_id,
                   payload=_b(payload))
    return event_id, key, encode_envelope(env)


class CaseStreamEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope fields a case-stream consumer needs, the payload left raw for `decode_case_payload`."""

    event_id: str
    event_type: str
    ts_utc: str
    platform_run_id: str | None = None
    payload: msgspec.Raw


case_event_decoder: Final = msgspec.json.Decoder(CaseStreamEvent)
_CASE_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    CASE_TRIGGER: msgspec.json.Decoder(CaseTriggerPayload),
    LABEL_ASSERTION: msgspec.json.Decoder(LabelAssertionPayload),
}


def decode_case_payload(event: CaseStreamEvent) -> CaseTriggerPayload | LabelAssertionPayload:
    """The typed payload of a case-stream event (raises msgspec errors on a contract breach)."""
    decoder = _CASE_DECODERS.get(event.event_type)
    if decoder is None:
        raise msgspec.ValidationError(f"not a case-stream event type: {event.event_type!r}")
    out: CaseTriggerPayload | LabelAssertionPayload = decoder.decode(event.payload)
    return out
