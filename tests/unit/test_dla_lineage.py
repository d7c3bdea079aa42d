"""The Decision Log/Audit's chain model: records join in any order; what is missing is named; a second,
different record for a held link is a conflict that changes nothing."""

from __future__ import annotations

import itertools

import pytest

from fraudrt.rtdl.decision_log_audit import Chain, DecisionLogAuditConfig, Fact, join, load_config

pytestmark = pytest.mark.unit

TS = "2031-01-01T00:00:00.000000Z"
DECISION = Fact("decision", "e-dec", "d1", "src", "REVIEW", TS, TS, segment_ref="s3://b/k#L1")
INTENT = Fact("intent", "e-int", "d1", "src", "REVIEW", TS, TS, action_id="a1")
OUTCOME = Fact("outcome", "o1", "d1", "src", "REVIEW", TS, TS, action_id="a1", outcome_id="o1",
               outcome_status="EXECUTED")


def _replay(facts: tuple[Fact, ...]) -> tuple[Chain, list[list[str]]]:
    chain = Chain.first(facts[0])
    seen = []
    for fact in facts:
        chain, anomaly = join(chain, fact)
        assert anomaly is None
        seen.append(chain.missing())
    return chain, seen


@pytest.mark.parametrize("order", list(itertools.permutations([DECISION, INTENT, OUTCOME])),
                         ids=lambda o: ">".join(f.kind for f in o))
def test_a_chain_is_whole_once_decision_intent_and_outcome_are_in_whatever_their_order(
        order: tuple[Fact, ...]) -> None:
    chain, seen = _replay(order)
    assert chain.whole and seen[-1] == []
    assert all(reasons for reasons in seen[:-1]), "incomplete before the last record"
    assert (chain.decision_event_id, chain.decision_ref, chain.intent_ids, chain.outcome_ids) == \
        ("e-dec", "s3://b/k#L1", ("a1",), ("o1",))


def test_what_is_missing_is_named() -> None:
    assert Chain.first(DECISION).missing() == ["MISSING_DECISION", "MISSING_INTENT"]
    only_decision, _ = join(Chain.first(DECISION), DECISION)
    assert only_decision.missing() == ["MISSING_INTENT"]
    no_outcome, _ = join(only_decision, INTENT)
    assert no_outcome.missing() == ["MISSING_OUTCOME"]
    orphan_outcome, _ = join(Chain.first(OUTCOME), OUTCOME)
    assert orphan_outcome.missing() == ["MISSING_DECISION", "MISSING_INTENT_LINK"]


def test_a_second_record_for_a_held_link_is_a_conflict_and_changes_nothing() -> None:
    chain, _ = _replay((DECISION, INTENT, OUTCOME))
    for fact, kind in ((DECISION._replace(event_id="e-dec-2"), "DECISION_CONFLICT"),
                       (INTENT._replace(event_id="e-int-2"), "INTENT_CONFLICT"),
                       (OUTCOME._replace(event_id="o2", outcome_id="o2", outcome_status="FAILED"),
                        "OUTCOME_CONFLICT")):
        after, anomaly = join(chain, fact)
        assert after is chain and anomaly is not None and anomaly.startswith(kind)


def test_a_link_after_resolution_is_kept_and_flagged() -> None:
    chain, _ = _replay((DECISION, INTENT, OUTCOME))
    audited = chain.__class__(**{**{f: getattr(chain, f) for f in chain.__struct_fields__}, "status": "RESOLVED"})
    after, anomaly = join(audited, INTENT._replace(event_id="e-int-b", action_id="a2"))
    assert anomaly == "LINK_AFTER_RESOLUTION" and after.intent_ids == ("a1", "a2") and after.status == "RESOLVED"


def test_the_shipped_settings_file_is_the_documented_default() -> None:
    assert load_config() == DecisionLogAuditConfig()
    assert load_config({"grace_seconds": 2}).grace_seconds == 2
