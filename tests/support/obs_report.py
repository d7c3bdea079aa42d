"""A run report built from known events and a known truth (no substrate): for the report's unit tests
and the browser test of its HTML page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from fraudrt.obs_gov import _report as R
from fraudrt.obs_gov._aggregate import fold
from fraudrt.obs_gov._truth import truth_from_frame
from tests.support.decision_lane import at, chain

PINS = {"platform_run_id": "platform_20310601T120000Z", "scenario_run_id": "a" * 32, "manifest_fingerprint": "b" * 64,
        "parameter_hash": "c" * 64, "seed": 7, "scenario_id": "baseline_v1"}


@dataclass
class Rec:
    data: bytes


def known_truth() -> Any:
    # 10 flows in stream order, requests then responses interleaved: flows 0-2 fraud (two campaign types).
    rows = []
    for f in range(10):
        fraud = f < 3
        campaign = None if not fraud else ("card_testing_00001" if f < 2 else "account_takeover_00002")
        rows.append({"flow_id": f, "event_type": "AUTH_REQUEST", "fraud_flag": fraud, "campaign_id": campaign})
        rows.append({"flow_id": f, "event_type": "AUTH_RESPONSE", "fraud_flag": fraud, "campaign_id": campaign})
    return truth_from_frame(pl.DataFrame(rows), "s3_event_stream_with_fraud_6B", "s3://x/facts.json")


ACTIONS = {0: "DECLINE", 1: "APPROVE", 2: "REVIEW", 3: "REVIEW", 4: "APPROVE", 5: "APPROVE", 6: "STEP_UP",
           7: "APPROVE", 8: "APPROVE", 9: "APPROVE"}


def events() -> list[Rec]:
    out = []
    for f, action in ACTIONS.items():
        c = chain(PINS, f"traffic-{f}", f, action, admitted=at(f // 4, 10 * f), decide_ms=2.0 + f)
        out += [Rec(c.decision), Rec(c.intent), Rec(c.outcome), Rec(c.audit)]
    return out


def ingress(admitted_traffic: int) -> dict[str, Any]:
    return {"available": True, "by_output": {"s3_event_stream_with_fraud_6B": {"ADMIT": admitted_traffic}}}


def report() -> dict[str, Any]:
    truth = known_truth()
    counts = dict(fold(events(), truth.label, lambda r: r.data).deltas)
    rtdl = R.rtdl_section(counts)
    components = R.component_section({"decision_fabric": {"pack_id": "p", "health_path": "/x", "health": None,
                                                          "metrics": None}})
    return {"platform_run_id": PINS["platform_run_id"], "generated_at_utc": "2031-06-01T12:00:00.000000Z",
            "basis": {"profile": "embedded"}, "run_completed": R.completion(rtdl, ingress(20), None, truth),
            "throughput": R.throughput_section(counts), "latency_ms": R.latency_section(counts, components),
            "rtdl": rtdl, "quality": R.quality_section(counts, truth, 0),
            "ingress": {"available": True, "by_output": {"o<script>": {"ADMIT": 1}}, "by_producer": {}},
            "components": components, "evidence_refs": {"a": "<b>"}}
