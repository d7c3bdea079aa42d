"""Case plane contracts and pure rules: ids and hashes that follow from content, label checks, the as-of
resolution, escalation criteria, the feed's selection."""

from __future__ import annotations

import sys

import msgspec
import pytest

from fraudrt.case_labels.case_trigger import EscalationPolicy, lane_decoder
from fraudrt.case_labels.label_store.reader import StoredAssertion, resolve
from fraudrt.case_labels.truth_chargeback_feed import selected
from fraudrt.config import CaseLabelsSettings, project_root
from fraudrt.contracts import (
    CaseStreamEvent,
    CaseSubjectKey,
    EvidenceRef,
    LabelSubjectKey,
    Pins,
    TriggerDetails,
    case_envelope,
    case_event_decoder,
    case_id,
    decode_case_payload,
    decode_payload,
    label_problem,
    make_case_trigger,
    make_label_assertion,
    trigger_problem,
)

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from tests.support.case_lane import audit, decision, outcome, run_pins

pytestmark = pytest.mark.unit

RUN = "platform_20310101T000000Z"
PINS: Pins = run_pins(RUN)


def _trigger(**over: object) -> object:
    details = TriggerDetails(event_time="2026-01-01T00:00:01.000000Z", source_event_id="e1",
                             escalation_reasons=["ACTION_REVIEW"], decision_id="a" * 32, action="REVIEW", score=0.6)
    kw: dict[str, object] = dict(
        trigger_type="DECISION_ESCALATION", source_ref_id="decision:" + "a" * 32,
        subject=CaseSubjectKey(platform_run_id=RUN, event_class="auth_request", event_id="e1"), pins=PINS,
        evidence_refs=[EvidenceRef(ref_type="DECISION", ref_id="a" * 32)], observed_time="2026-01-01T00:00:02.000000Z",
        details=details)
    kw.update(over)
    return make_case_trigger(**kw)  # type: ignore[arg-type]


def _label(**over: object) -> object:
    kw: dict[str, object] = dict(
        case_timeline_event_id="b" * 32, subject=LabelSubjectKey(platform_run_id=RUN, event_id="e1"), pins=PINS,
        label_type="fraud_disposition", label_value="FRAUD_CONFIRMED", effective_time="2026-01-01T00:00:01.000000Z",
        observed_time="2026-01-02T00:00:00.000000Z", source_type="HUMAN", actor_id="HUMAN::alice",
        evidence_refs=[EvidenceRef(ref_type="CASE_EVENT", ref_id="b" * 32)])
    kw.update(over)
    return make_label_assertion(**kw)  # type: ignore[arg-type]


def test_a_trigger_survives_the_bus_and_its_ids_follow_from_its_content() -> None:
    t = _trigger()
    assert t.case_id == case_id(RUN, "auth_request", "e1")  # type: ignore[attr-defined]
    _, key, data = case_envelope(t, ts_utc="2026-01-01T00:00:01.000000Z", producer="case_trigger")  # type: ignore[arg-type]
    back = decode_case_payload(case_event_decoder.decode(data))
    assert back == t and trigger_problem(back) is None  # type: ignore[arg-type]
    assert key == t.case_id  # type: ignore[attr-defined]
    # Same evidence, another order: same trigger (refs are sorted before hashing).
    refs = [EvidenceRef(ref_type="EB_ORIGIN_OFFSET", ref_id="s:1"), EvidenceRef(ref_type="DECISION", ref_id="a" * 32)]
    assert _trigger(evidence_refs=refs) == _trigger(evidence_refs=list(reversed(refs)))


@pytest.mark.parametrize(("edit", "code"), [
    (lambda t: msgspec.structs.replace(t, case_id="c" * 32), "CASE_ID_MISMATCH"),
    (lambda t: msgspec.structs.replace(t, source_ref_id="decision:other"), "TRIGGER_ID_MISMATCH"),
    (lambda t: msgspec.structs.replace(t, observed_time="2026-01-01T00:00:03.000000Z"), "PAYLOAD_HASH_MISMATCH"),
    (lambda t: msgspec.structs.replace(t, evidence_refs=[]), "MISSING_EVIDENCE_REFS"),
    (lambda t: msgspec.structs.replace(t, observed_time="2026-04-31T00:00:00.000000Z"), "TIME_INVALID"),
    (lambda t: msgspec.structs.replace(t, case_subject_key=CaseSubjectKey(
        platform_run_id="platform_20300101T000000Z", event_class="auth_request", event_id="e1")),
     "SUBJECT_RUN_MISMATCH"),
])
def test_a_trigger_whose_ids_or_hash_do_not_follow_is_refused(edit: object, code: str) -> None:
    problem = trigger_problem(edit(_trigger()))  # type: ignore[operator]
    assert problem is not None and problem.startswith(code)


@pytest.mark.parametrize(("over", "code"), [
    ({"label_value": "CHARGEBACK"}, "LABEL_VALUE_INVALID"),
    ({"evidence_refs": []}, "MISSING_EVIDENCE_REFS"),
    ({"actor_id": None}, "ACTOR_REQUIRED"),
    ({"actor_id": "SYSTEM::x"}, "ACTOR_REQUIRED"),
    # The payload pattern lets a Feb 30 or a year 0 through; Postgres would refuse it mid-batch.
    ({"effective_time": "2026-02-30T00:00:00.000000Z"}, "TIME_INVALID"),
    ({"observed_time": "0000-01-01T00:00:00.000000Z"}, "TIME_INVALID"),
])
def test_label_checks(over: dict[str, object], code: str) -> None:
    problem = label_problem(_label(**over))  # type: ignore[arg-type]
    assert problem is not None and problem.startswith(code)


def test_a_label_with_another_value_on_the_same_timeline_event_has_the_same_id_and_another_hash() -> None:
    a, b = _label(), _label(label_value="LEGIT_CONFIRMED")
    assert a.label_assertion_id == b.label_assertion_id and a.payload_hash != b.payload_hash  # type: ignore[attr-defined]
    forged = msgspec.structs.replace(b, payload_hash=a.payload_hash)  # type: ignore[type-var]
    assert label_problem(forged).startswith("PAYLOAD_HASH_MISMATCH")  # type: ignore[arg-type, union-attr]
    assert label_problem(a) is None and label_problem(b) is None  # type: ignore[arg-type]


def _stored(i: int, value: str, source: str, observed: str, actor: str | None = None) -> StoredAssertion:
    return StoredAssertion(label_assertion_id=f"{i:032x}", event_id="e1", label_type="fraud_disposition",
                           label_value=value, source_type=source, actor_id=actor,
                           effective_time="2026-01-01T00:00:00.000000Z",
                           observed_time=observed, training_eligible=source != "AUTO", case_id=None,
                           committed_at=observed)


def test_as_of_resolution_latest_per_source_and_conflict_when_sources_disagree() -> None:
    t = [f"2026-01-0{d}T00:00:00.000000Z" for d in range(1, 6)]
    human = _stored(1, "FRAUD_CONFIRMED", "HUMAN", t[0], "HUMAN::alice")
    external = _stored(2, "LEGIT_CONFIRMED", "EXTERNAL", t[1], "EXTERNAL::cb")
    correction = _stored(3, "LEGIT_CONFIRMED", "HUMAN", t[2], "HUMAN::alice")
    other_human = _stored(4, "FRAUD_CONFIRMED", "HUMAN", t[3], "HUMAN::bob")
    assert resolve("e1", "fraud_disposition", t[0], []).status == "NOT_FOUND"
    one = resolve("e1", "fraud_disposition", t[0], [human])
    assert (one.status, one.label_value, one.selected_assertion_id) == (
        "RESOLVED", "FRAUD_CONFIRMED", human.label_assertion_id)
    two = resolve("e1", "fraud_disposition", t[1], [human, external])
    assert two.status == "CONFLICT" and two.label_value is None
    assert {c.label_assertion_id for c in two.candidates} == {human.label_assertion_id, external.label_assertion_id}
    # alice corrects herself: her latest agrees with the chargeback.
    three = resolve("e1", "fraud_disposition", t[2], [human, external, correction])
    assert (three.status, three.label_value, three.selected_assertion_id) == (
        "RESOLVED", "LEGIT_CONFIRMED", correction.label_assertion_id)
    assert resolve("e1", "fraud_disposition", t[3], [human, external, correction, other_human]).status == "CONFLICT"
    # One source saying two things at one instant is a conflict too, never a hash-order pick.
    tie = _stored(5, "FRAUD_CONFIRMED", "EXTERNAL", t[1], "EXTERNAL::cb")
    assert resolve("e1", "fraud_disposition", t[1], [external, tie]).status == "CONFLICT"


def test_escalation_policy_is_the_configuration_not_every_decision() -> None:
    policy = EscalationPolicy.from_settings(CaseLabelsSettings())
    cases = {"APPROVE": (0.1, None), "STEP_UP": (0.5, None), "REVIEW": (0.2, ["ACTION_REVIEW"]),
             "DECLINE": (0.9, ["ACTION_DECLINE", "SCORE_AT_LEAST_0.8"])}
    for action, (score, reasons) in cases.items():
        d = decision(PINS, 1, action=action, score=score)
        got = policy.evaluate(lane_decoder.decode(d.envelope), d.payload)
        assert (got.details.escalation_reasons if got else None) == reasons, action
    rules_only = decision(PINS, 2, action="APPROVE", score=None)  # a DEGRADED_2 decision has no score
    assert policy.evaluate(lane_decoder.decode(rules_only.envelope), rules_only.payload) is None
    d = decision(PINS, 3, action="APPROVE", score=0.1).payload
    for status, wanted in (("EXECUTED", None), ("DENIED", None), ("FAILED", "ACTION_FAILURE")):
        env = lane_decoder.decode(outcome(PINS, d, status))
        got = policy.evaluate(env, decode_payload(env))
        assert (got.trigger_type if got else None) == wanted
    for chain, wanted in (("RESOLVED", None), ("UNRESOLVED", "ANOMALY")):
        env = lane_decoder.decode(audit(PINS, d, chain))
        got = policy.evaluate(env, decode_payload(env))
        assert (got.trigger_type if got else None) == wanted
    strict = EscalationPolicy.from_settings(CaseLabelsSettings(escalate_actions=["DECLINE"],
                                                               escalate_score_at_least=None))
    review = decision(PINS, 4, action="REVIEW", score=0.99)
    assert strict.evaluate(lane_decoder.decode(review.envelope), review.payload) is None


def test_feed_selection_is_a_stable_share() -> None:
    picked = [f for f in range(20_000) if selected(RUN, f, 0.3)]
    assert 0.28 < len(picked) / 20_000 < 0.32
    assert picked == [f for f in range(20_000) if selected(RUN, f, 0.3)]
    assert not any(selected(RUN, f, 0.0) for f in range(1000)) and all(selected(RUN, f, 1.0) for f in range(1000))


def test_case_stream_event_reads_only_what_it_needs() -> None:
    assert set(CaseStreamEvent.__struct_fields__) == {"event_id", "event_type", "ts_utc", "platform_run_id", "payload"}
