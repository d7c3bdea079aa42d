"""What needs a person: the escalation criteria, as a pure function of one decision-lane event.

Not every decision becomes a case (critique #6): a decision escalates when its action is one the
configuration names (REVIEW, DECLINE by default) or its score reaches the configured level; an
action outcome when its status is one named (FAILED by default); an audit record when its chain is
UNRESOLVED (the audit could not tie the decision to its intents and outcomes in time). Everything
else is seen and counted, and nothing is emitted for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec

from fraudrt.config import CaseLabelsSettings
from fraudrt.contracts import (
    ACTION_OUTCOME,
    AUDIT_RECORD,
    DECISION_RESPONSE,
    ActionOutcomePayload,
    AuditRecordPayload,
    DecisionLaneEvent,
    DecisionPayload,
    EvidenceRef,
    Pins,
    TriggerDetails,
    TriggerType,
)

from .._pins import envelope_pins

LANE_TYPES: Final = frozenset({DECISION_RESPONSE, ACTION_OUTCOME, AUDIT_RECORD})


class LaneEvent(DecisionLaneEvent, frozen=True, kw_only=True):
    """A decision-lane envelope with the pins a case trigger copies."""

    manifest_fingerprint: str | None = None
    parameter_hash: str | None = None
    seed: int | None = None
    scenario_id: str | None = None
    run_id: str | None = None

    def pins(self) -> Pins:
        """The event's pins, validated (ValueError names what is missing or malformed)."""
        return envelope_pins(self)


lane_decoder: Final = msgspec.json.Decoder(LaneEvent)

LanePayload = DecisionPayload | ActionOutcomePayload | AuditRecordPayload


@dataclass(frozen=True, slots=True)
class Escalation:
    """One piece of evidence that escalates, before its case subject is known."""

    trigger_type: TriggerType
    source_ref_id: str
    evidence: tuple[EvidenceRef, ...]
    observed_time: str
    details: TriggerDetails
    decision_id: str
    flow_id: int | None


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    actions: frozenset[str]
    score_at_least: float | None
    outcomes: frozenset[str]
    unresolved_audits: bool

    @classmethod
    def from_settings(cls, s: CaseLabelsSettings) -> EscalationPolicy:
        return cls(frozenset(s.escalate_actions), s.escalate_score_at_least, frozenset(s.escalate_outcomes),
                   s.escalate_unresolved_audits)

    def evaluate(self, event: LaneEvent, payload: LanePayload) -> Escalation | None:
        if isinstance(payload, DecisionPayload):
            return self._decision(payload)
        if isinstance(payload, ActionOutcomePayload):
            return self._outcome(event, payload)
        return self._audit(event, payload)

    def _decision(self, d: DecisionPayload) -> Escalation | None:
        reasons = []
        if d.action in self.actions:
            reasons.append(f"ACTION_{d.action}")
        if self.score_at_least is not None and d.score is not None and d.score >= self.score_at_least:
            reasons.append(f"SCORE_AT_LEAST_{self.score_at_least:g}")
        if not reasons:
            return None
        src = d.source_event
        details = TriggerDetails(
            event_time=src.ts_utc, source_event_id=src.event_id, escalation_reasons=reasons, flow_id=d.flow_id,
            decision_id=d.decision_id, action=d.action, score=d.score, reason_codes=list(d.reason_codes),
            rules_fired=list(d.rules_fired), top_features=list(d.top_features), bundle_digest=d.bundle.digest,
            posture=d.posture.mode, context_status=d.context_status)
        evidence = (EvidenceRef(ref_type="DECISION", ref_id=d.decision_id),
                    EvidenceRef(ref_type="EB_ORIGIN_OFFSET", ref_id=f"{src.shard_id}:{src.sequence_number}",
                                ref_scope=src.stream))
        return Escalation("DECISION_ESCALATION", f"decision:{d.decision_id}", evidence, d.timings.decided_at_utc,
                          details, d.decision_id, d.flow_id)

    def _outcome(self, event: LaneEvent, o: ActionOutcomePayload) -> Escalation | None:
        if o.status not in self.outcomes:
            return None
        details = TriggerDetails(
            event_time=event.ts_utc, source_event_id=o.source_event_id, escalation_reasons=[f"OUTCOME_{o.status}"],
            decision_id=o.decision_id, outcome_id=o.outcome_id, action_kind=o.action_kind, outcome_status=o.status,
            outcome_reason_code=o.reason_code)
        evidence = (EvidenceRef(ref_type="ACTION_OUTCOME", ref_id=o.outcome_id),
                    EvidenceRef(ref_type="DECISION", ref_id=o.decision_id))
        return Escalation("ACTION_FAILURE", f"action_outcome:{o.outcome_id}", evidence, o.completed_at_utc,
                          details, o.decision_id, None)

    def _audit(self, event: LaneEvent, a: AuditRecordPayload) -> Escalation | None:
        if not self.unresolved_audits or a.chain_status != "UNRESOLVED":
            return None
        details = TriggerDetails(
            event_time=event.ts_utc, source_event_id=a.source_event_id, escalation_reasons=["CHAIN_UNRESOLVED"],
            decision_id=a.decision_id, action=a.action, audit_id=a.audit_id, chain_status=a.chain_status,
            unresolved_reasons=list(a.unresolved_reasons))
        evidence = (EvidenceRef(ref_type="DLA_AUDIT_RECORD", ref_id=a.audit_id),
                    EvidenceRef(ref_type="DECISION", ref_id=a.decision_id))
        return Escalation("ANOMALY", f"audit:{a.audit_id}", evidence, a.audited_at_utc, details, a.decision_id,
                          None)
