"""The run report's pure parts: folding decision-lane events into counters, quality against truth,
`run_completed`, the HTML page (self-contained), the secret scanner."""

from __future__ import annotations

import re
import sys

import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.obs_gov import _report as R
from fraudrt.obs_gov._aggregate import fold, histogram
from fraudrt.obs_gov._html import render
from fraudrt.obs_gov._secrets import Scanner, Secret
from tests.support.obs_report import Rec, events, ingress, known_truth, report

pytestmark = pytest.mark.unit

def test_fold_counts_every_event_once_with_latency_throughput_and_quality() -> None:
    truth = known_truth()
    folded = fold(events(), truth.label, lambda r: r.data)
    d = folded.deltas
    assert (d["decisions"], d["intents"], d["outcomes"], d["audits"]) == (10, 10, 10, 10)
    assert d["decisions.action.APPROVE"] == 6 and d["decisions.action.REVIEW"] == 2
    assert d["q.fraud:card_testing.DECLINE"] == 1 and d["q.fraud:card_testing.APPROVE"] == 1
    assert d["q.fraud:account_takeover.REVIEW"] == 1 and d["q.legit.REVIEW"] == 1
    assert not folded.unscored and not folded.rejected
    h = histogram(dict(d), "admit_to_decision")
    assert h.total == 10 and 2.0 <= h.percentile(50) <= 8.0 * 1.1  # type: ignore[operator]
    assert sum(v for k, v in d.items() if k.startswith("tp.decided.")) == 10
    # Without the truth the decisions are kept for scoring later, not lost.
    later = fold(events(), None, lambda r: r.data)
    assert len(later.unscored) == 10 and not any(k.startswith("q.") for k in later.deltas)


def test_a_payload_that_breaks_its_contract_is_rejected_with_the_reason_not_counted() -> None:
    bad = Rec(events()[0].data.replace(b'"action":"DECLINE"', b'"action":"MAYBE"'))
    folded = fold([bad, Rec(b"not json")], None, lambda r: r.data)
    assert folded.deltas["decisions"] == 0 and folded.deltas["undecodable.decision_response"] == 1
    assert [reason.split(":")[0] for _r, reason in folded.rejected] == ["PAYLOAD_CONTRACT", "UNDECODABLE_ENVELOPE"]


def test_quality_per_action_per_campaign_and_flagged() -> None:
    truth = known_truth()
    counts = dict(fold(events(), truth.label, lambda r: r.data).deltas)
    q = R.quality_section(counts, truth, 0)
    # Fraud flows: 0 DECLINE, 1 APPROVE, 2 REVIEW. Legit: 3 REVIEW, 6 STEP_UP, the rest APPROVE.
    assert q["confusion"]["fraud"] == {"APPROVE": 1, "STEP_UP": 0, "REVIEW": 1, "DECLINE": 1}
    flagged = q["flagged"]
    assert (flagged["true_positives"], flagged["false_positives"]) == (2, 1)
    assert flagged["recall"] == pytest.approx(2 / 3, abs=1e-6)
    assert flagged["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert flagged["false_positive_rate"] == pytest.approx(1 / 7, abs=1e-6)
    assert q["per_action"]["DECLINE"]["precision"] == 1.0
    assert q["per_campaign_type"]["card_testing"]["recall_flagged"] == 0.5
    assert q["per_campaign_type"]["account_takeover"]["recall_flagged"] == 1.0


def test_run_completed_only_when_every_expected_event_is_accounted_for() -> None:
    truth = known_truth()
    counts = dict(fold(events(), truth.label, lambda r: r.data).deltas)
    rtdl = R.rtdl_section(counts)
    wsp = {"counters": {"streams_completed_total": 1}, "details": {"active_message_id": None}}
    # All 20 traffic rows admitted: 10 AUTH_REQUESTs, 10 chains.
    done = R.completion(rtdl, ingress(20), wsp, truth)
    assert done["run_completed"] and done["expected_decisions"] == 10, done
    # Capped at 7 traffic rows: 4 requests expected, 10 decided is not "completed".
    assert R.completion(rtdl, ingress(7), wsp, truth)["expected_decisions"] == 4
    missing_outcome = dict(counts, outcomes=9)
    reasons = R.completion(R.rtdl_section(missing_outcome), ingress(20), wsp, truth)["reasons"]
    assert reasons == ["outcomes 9 != intents 10"]
    streaming = {"counters": {"streams_completed_total": 0}, "details": {"active_message_id": "m"}}
    assert not R.completion(rtdl, ingress(20), streaming, truth)["run_completed"]
    assert not R.completion(rtdl, ingress(20), None, None)["run_completed"]


def test_the_html_is_self_contained_escaped_and_has_every_plot() -> None:
    html = render(report())
    assert "<script" not in html.lower() and "o&lt;script&gt;" in html
    # No resource is fetched: no src/href attribute, no url(), no @import (xmlns is a name, not a fetch).
    assert not re.search(r"\s(src|href)\s*=", html) and "url(" not in html and "@import" not in html
    for plot in ("events per second", "admit_to_decision (ms, log buckets)", "decision mix", "Confusion matrix"):
        assert plot in html, plot
    assert R.component_section({"x": {"health": None, "metrics": None, "health_path": "/p"}})["x"][
        "health_state"] == "MISSING"


def test_the_scanner_finds_secrets_and_passwords_in_urls_but_not_ordinary_words() -> None:
    scanner = Scanner([Secret("postgres_password", "S3cr3t-long-enough"), Secret("short", "platform")])
    assert scanner.scan(b"dsn=postgresql://u:S3cr3t-long-enough@h/db") == ["postgres_password", "url_with_password"]
    assert scanner.scan(b"postgresql://platform:platform@127.0.0.1:5434/platform") == ["url_with_password"]
    assert scanner.scan(b"s3://fraud-platform/run/x.json http://127.0.0.1:9000/x postgresql://u@h/db") == []
