"""The Degrade Ladder's pure parts: hysteresis, what a projector's report calls for, the policy file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fraudrt.contracts import HealthReport, MetricsReport, format_ts_utc
from fraudrt.rtdl.degrade_ladder import Baseline, LadderState, Report, Verdict, baseline, projector_verdict, step
from fraudrt.rtdl.policy import PolicyError, load_policy, parse_policy

pytestmark = pytest.mark.unit

QUIET = 30.0
RUN = "platform_20260101T000000Z"


def _at(state: LadderState, mode: str, now: float) -> tuple[LadderState, bool]:
    moved = step(state, Baseline(mode, ()), now, QUIET)
    return moved.state, moved.changed


def test_worse_at_once_better_only_after_a_quiet_period() -> None:
    s = LadderState("NORMAL", 1)
    s, changed = _at(s, "FAIL_CLOSED", 0.0)
    assert (s.mode, s.posture_seq, changed) == ("FAIL_CLOSED", 2, True)
    s, changed = _at(s, "NORMAL", 1.0)
    assert (s.mode, changed) == ("FAIL_CLOSED", False)
    s, changed = _at(s, "NORMAL", 30.9)
    assert (s.mode, changed) == ("FAIL_CLOSED", False)
    s, changed = _at(s, "NORMAL", 31.0)
    assert (s.mode, s.posture_seq, changed) == ("NORMAL", 3, True)


def test_a_relapse_restarts_the_quiet_period_and_an_upshift_goes_to_the_worst_seen() -> None:
    s = LadderState("FAIL_CLOSED", 5)
    s, _ = _at(s, "NORMAL", 0.0)
    s, _ = _at(s, "FAIL_CLOSED", 10.0)  # relapse: the clock starts again
    s, changed = _at(s, "NORMAL", 35.0)
    assert (s.mode, changed) == ("FAIL_CLOSED", False)
    s, _ = _at(s, "DEGRADED_1", 50.0)  # better than held, worse than NORMAL
    s, changed = _at(s, "NORMAL", 65.0)
    assert (s.mode, s.posture_seq, changed) == ("DEGRADED_1", 6, True)


def test_idle_healthy_projectors_are_normal_and_only_faults_count() -> None:
    assert baseline([Verdict("a", "NORMAL"), Verdict("b", "NORMAL")]) == Baseline("NORMAL", ())
    b = baseline([Verdict("ieg", "DEGRADED_1", "LAG"), Verdict("ofp", "DEGRADED_2", "HEALTH_RED"),
                  Verdict("csfb", "NORMAL")])
    assert b.mode == "DEGRADED_2" and b.reasons == ("ieg: LAG", "ofp: HEALTH_RED")


def _report(age_s: float, state: str = "GREEN", reasons: tuple[str, ...] = (), lag_ms: float = 0.0,
            now: float = 1_800_000_000.0) -> Report:
    from datetime import UTC, datetime

    ts = format_ts_utc(datetime.fromtimestamp(now - age_s, UTC))
    return Report(health=HealthReport(component="identity_entity_graph", platform_run_id=RUN,
                                      health_state=state, reasons=list(reasons), generated_at_utc=ts),  # type: ignore[arg-type]
                  metrics=MetricsReport(component="identity_entity_graph", platform_run_id=RUN, generated_at_utc=ts,
                                        gauges={"lag_ms.fp.bus.context.flow_anchor.fraud.v1": lag_ms,
                                                "watermark.x/shardId-0": "2026-01-01T00:00:00.000000Z"}))


@pytest.mark.parametrize(("report", "since_start", "mode", "reason"), [
    (_report(1.0), 100.0, "NORMAL", ""),  # idle and caught up: lag 0, GREEN
    (_report(1.0, "AMBER", ("DEAD_LETTERS: 1 records rejected",)), 100.0, "NORMAL", ""),
    (Report(), 5.0, "NORMAL", ""),  # no report yet, within the start-up grace
    (Report(), 100.0, "DEGRADED_1", "NO_REPORT"),
    (_report(25.0), 100.0, "DEGRADED_1", "REPORT_STALE"),
    (_report(1.0, "RED", ("CONSUMER_LAG",)), 100.0, "DEGRADED_1", "HEALTH_RED"),
    (_report(1.0, "AMBER", ("DEPENDENCY_DOWN: POSTGRES_UNAVAILABLE for 3s",)), 100.0, "DEGRADED_1", "DEPENDENCY_DOWN"),
    (_report(1.0, lag_ms=4999.0), 100.0, "NORMAL", ""),
    (_report(1.0, lag_ms=5000.0), 100.0, "DEGRADED_1", "LAG"),
    (Report(error="DecodeError: truncated"), 100.0, "DEGRADED_1", "REPORT_UNREADABLE"),
])
def test_what_a_projector_report_calls_for(report: Report, since_start: float, mode: str, reason: str) -> None:
    policy = load_policy()
    spec = next(s for s in policy.ladder.signals if s.component == "identity_entity_graph")
    v = projector_verdict(spec, report, now=1_800_000_000.0, since_start=since_start, ladder=policy.ladder)
    assert v.mode == mode
    assert v.reason.startswith(reason)


def test_the_shipped_policy_degrades_in_order() -> None:
    policy = load_policy()
    on_fault = {s.component: s.on_fault for s in policy.ladder.signals}
    assert on_fault == {"context_store_flow_binding": "FAIL_CLOSED", "online_feature_plane": "DEGRADED_2",
                        "identity_entity_graph": "DEGRADED_1"}
    assert policy.postures["DEGRADED_1"].groups == ("request", "binding", "velocity")
    assert not policy.postures["DEGRADED_2"].model and policy.postures["FAIL_CLOSED"].forced_action == "REVIEW"
    assert policy.bundle_path("model").is_file() and policy.bundle_path("rules_only").is_file()


def test_a_policy_where_a_worse_posture_allows_more_is_refused(tmp_path: Path) -> None:
    doc = yaml.safe_load((Path(load_policy().directory) / "decision_policy.yaml").read_text())
    doc["postures"]["DEGRADED_2"]["groups"] = ["request", "binding", "graph"]
    with pytest.raises(PolicyError, match="DEGRADED_2 allows groups a better posture does not"):
        parse_policy(doc, tmp_path)
    doc = yaml.safe_load((Path(load_policy().directory) / "decision_policy.yaml").read_text())
    del doc["postures"]["FAIL_CLOSED"]
    with pytest.raises(PolicyError, match="postures must be exactly"):
        parse_policy(doc, tmp_path)
