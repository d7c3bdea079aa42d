"""A decision's chain (decision -> intents -> outcomes) as pure data: how a record joins it, whether it
is whole, and what its audit record says. No I/O; the actor loads chains, applies a batch's records
in arrival order and writes them back.

Records may arrive in any order (an outcome before its intent, both before the decision): a chain
exists from its first record, keyed by decision id, and is whole (RESOLVED) once it holds the
decision, at least one intent, and exactly the outcomes of its intents. What is missing is said
with stable reasons: MISSING_DECISION, MISSING_INTENT (a decision no intent has joined),
MISSING_OUTCOME (an intent without its outcome), MISSING_INTENT_LINK (an outcome whose intent has
not come). A second, different event for a link the chain already holds (another decision event,
another event for an intent, a second outcome for one intent) is a conflict: the first is kept,
the conflict reported. A link that arrives after the chain was audited RESOLVED is reported too
(`LINK_AFTER_RESOLUTION`) and the published verdict stands.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

import msgspec

from fraudrt.contracts import ACTION_KIND_OF

Kind = Literal["decision", "intent", "outcome"]
Status = Literal["PENDING", "RESOLVED", "UNRESOLVED"]
ACTION_OF_KIND: Final = {kind: action for action, kind in ACTION_KIND_OF.items()}


class Fact(NamedTuple):
    """What one accepted record says about its chain."""

    kind: Kind
    event_id: str
    decision_id: str
    source_event_id: str
    action: str
    admitted_at_utc: str
    decided_at_utc: str
    action_id: str | None = None
    outcome_id: str | None = None
    outcome_status: str | None = None
    segment_ref: str | None = None


class Chain(msgspec.Struct, frozen=True, kw_only=True):
    decision_id: str
    status: Status = "PENDING"
    source_event_id: str
    action: str
    admitted_at_utc: str
    decided_at_utc: str
    decision_event_id: str | None = None
    decision_ref: str | None = None
    intent_ids: tuple[str, ...] = ()
    intent_event_ids: tuple[str, ...] = ()
    outcome_action_ids: tuple[str, ...] = ()
    outcome_ids: tuple[str, ...] = ()
    outcome_statuses: tuple[str, ...] = ()

    @classmethod
    def first(cls, fact: Fact) -> Chain:
        """An empty chain for the fact's decision, described by what the fact knows."""
        return cls(decision_id=fact.decision_id, source_event_id=fact.source_event_id, action=fact.action,
                   admitted_at_utc=fact.admitted_at_utc, decided_at_utc=fact.decided_at_utc)

    def missing(self) -> list[str]:
        reasons = []
        if self.decision_event_id is None:
            reasons.append("MISSING_DECISION")
        if not self.intent_ids and not self.outcome_ids:
            reasons.append("MISSING_INTENT")
        if any(a not in self.outcome_action_ids for a in self.intent_ids):
            reasons.append("MISSING_OUTCOME")
        if any(a not in self.intent_ids for a in self.outcome_action_ids):
            reasons.append("MISSING_INTENT_LINK")
        return reasons

    @property
    def whole(self) -> bool:
        return not self.missing()


def join(chain: Chain, fact: Fact) -> tuple[Chain, str | None]:
    """`chain` with `fact` in it, and an anomaly to record, or None. A conflict keeps the fact out
    (the chain comes back unchanged); a link after resolution is kept, flagged, and the status stays."""
    late = "LINK_AFTER_RESOLUTION" if chain.status == "RESOLVED" else None
    if fact.kind == "decision":
        if chain.decision_event_id is not None:
            return chain, f"DECISION_CONFLICT: {chain.decision_event_id} holds decision {chain.decision_id}"
        # The decision's own description wins over what an intent or outcome said of it.
        return msgspec.structs.replace(
            chain, decision_event_id=fact.event_id, decision_ref=fact.segment_ref, source_event_id=fact.source_event_id,
            action=fact.action, admitted_at_utc=fact.admitted_at_utc, decided_at_utc=fact.decided_at_utc), late
    assert fact.action_id is not None
    if fact.kind == "intent":
        if fact.action_id in chain.intent_ids:
            held = chain.intent_event_ids[chain.intent_ids.index(fact.action_id)]
            return chain, f"INTENT_CONFLICT: {held} holds intent {fact.action_id}"
        return msgspec.structs.replace(chain, intent_ids=(*chain.intent_ids, fact.action_id),
                                       intent_event_ids=(*chain.intent_event_ids, fact.event_id)), late
    assert fact.outcome_id is not None and fact.outcome_status is not None
    if fact.action_id in chain.outcome_action_ids:
        held = chain.outcome_ids[chain.outcome_action_ids.index(fact.action_id)]
        return chain, f"OUTCOME_CONFLICT: outcome {held} already answers intent {fact.action_id}"
    return msgspec.structs.replace(
        chain, outcome_action_ids=(*chain.outcome_action_ids, fact.action_id),
        outcome_ids=(*chain.outcome_ids, fact.outcome_id),
        outcome_statuses=(*chain.outcome_statuses, fact.outcome_status)), late
