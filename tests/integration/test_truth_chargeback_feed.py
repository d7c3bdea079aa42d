"""The simulated chargeback feed on a generated world: the flows it labels (every fraud, a share of the
rest), values from the world's truth, labels known only a delay after the flow (in the world's clock), each
flow labelled once, into the Label Store as EXTERNAL training truth; and a case opened for each chargeback."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from fraudrt.config import project_root
from fraudrt.contracts import format_ts_utc, parse_ts_utc
from fraudrt.runtime.bus import KinesisBus
from fraudrt.substrate import bootstrap

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.case_labels.truth_chargeback_feed import selected
from fraudrt.contracts import Pins
from fraudrt.control_ingress.scenario_runner import sr_ready
from fraudrt.engine import output_paths, read_run_receipt_raw
from tests.integration.test_sr_ready import oracle_world, ready_request
from tests.support.case_lane import run_pins, running_plane, source_event_id, traffic_request
from tests.support.harness import (
    create_streams,
    make_scope,
    mint_run_id,
    new_prefix,
    open_pool,
    put,
    read_all,
    wait_for,
)
from tests.support.rtdl_world import envelopes, make_world

pytestmark = pytest.mark.integration

SHARE, DELAY = 0.5, 2.0
TRAFFIC = "s3_event_stream_with_fraud_6B"


async def test_the_feed_labels_a_share_of_flows_from_truth_after_the_delay(substrate: Any, tmp_path: Path) -> None:
    root = make_world(tmp_path / "world", n_flows=300, seed=11, fraud_rate=0.2)
    settings = substrate.settings_for(FRAUDRT_STREAM_PREFIX=new_prefix(), FRAUDRT_RUNS_ROOT=str(tmp_path / "runs"),
                                      CASE_FEED_TRUTH_ENGINE_RUN_ROOT=str(root), CASE_FEED_LEGIT_SHARE=str(SHARE),
                                      CASE_FEED_DELAY_SECONDS=str(DELAY))
    await bootstrap(settings)
    run = mint_run_id()
    traffic = envelopes(root, TRAFFIC, run)
    scenario = read_run_receipt_raw(root)["scenario_ids"][0]
    truth = pl.read_parquet(output_paths(root, "s3_flow_anchor_with_fraud_6B", scenario),
                            columns=["flow_id", "fraud_flag"])
    fraud = dict(zip(truth["flow_id"].to_list(), truth["fraud_flag"].to_list(), strict=True))
    requests = [msgspec.json.decode(e) for e in traffic]
    requests = [r for r in requests if r["payload"]["event_type"] == "AUTH_REQUEST"]
    last = max(parse_ts_utc(msgspec.json.decode(e)["ts_utc"]) for e in traffic)
    # Every fraudulent flow comes back as a chargeback (feed_fraud_share 1); a share of the others.
    picked = [r for r in requests if fraud[r["payload"]["flow_id"]] or selected(run, r["payload"]["flow_id"], SHARE)]
    due = [r for r in picked if parse_ts_utc(r["ts_utc"]) + timedelta(seconds=DELAY) <= last]
    assert 0 < len(due) < len(picked) and any(fraud[r["payload"]["flow_id"]] for r in due)
    # A selected flow the world does not hold: refused with its reason, never labelled from nothing.
    stranger = 10**9
    pins = run_pins(run)
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        stream = settings.streams.name("traffic_fraud")
        half = len(traffic) // 2
        # Re-published copies of the first half: a flow is labelled once whatever the bus carries.
        await put(bus, stream, traffic[:half] + traffic[:half] + traffic[half:])
        async with running_plane(settings, run, pool, bus, components=("truth_chargeback_feed", "label_store")) as p:
            feed, ls = p.components["truth_chargeback_feed"], p.components["label_store"]

            async def metrics() -> tuple[dict[str, Any], dict[str, Any]]:
                return feed.metrics(), ls.metrics()

            await wait_for(metrics, lambda m: m[1].get("accepted") == len(due), timeout=60,
                           what=f"{len(due)} EXTERNAL labels in the Label Store")
            await put(bus, stream, [traffic_request(pins, stranger, 0.0)])
            await wait_for(metrics, lambda m: m[0].get("dead_letters") == 1, what="the stranger refused")
            feed_metrics, ls_metrics, health = feed.metrics(), ls.metrics(), feed.health()
            rows = await pool.fetch("SELECT * FROM ls_label_assertions WHERE platform_run_id = $1", run)
            cases = [msgspec.json.decode(r.data) for r in await read_all(bus, settings.streams.name("case"))]
            dead = await pool.fetch("SELECT reason FROM rt_dead_letters WHERE actor = 'truth_chargeback_feed' "
                                    "AND platform_run_id = $1", run)
    by_event = {r["event_id"]: r for r in rows}
    assert set(by_event) == {r["event_id"] for r in due}
    for r in due:
        row = by_event[r["event_id"]]
        assert row["label_value"] == ("FRAUD_CONFIRMED" if fraud[r["payload"]["flow_id"]] else "LEGIT_CONFIRMED")
        assert (row["source_type"], row["actor_id"], row["training_eligible"]) == (
            "EXTERNAL", "EXTERNAL::simulated_chargebacks", True)
        assert format_ts_utc(row["effective_time"]) == r["ts_utc"]
        assert row["observed_time"] == parse_ts_utc(r["ts_utc"]) + timedelta(seconds=DELAY)
    assert feed_metrics["labels_emitted"] == len(due) and feed_metrics["flows_selected"] == len(picked)
    assert feed_metrics["labels_waiting"] == len(picked) - len(due)
    assert feed_metrics["labels_emitted_fraud_confirmed"] == sum(fraud[r["payload"]["flow_id"]] for r in due)
    assert ls_metrics["accepted_external"] == len(due) and ls_metrics["duplicates"] == 0
    # Each chargeback opened a case on its flow (an EXTERNAL_SIGNAL trigger), and nothing else did.
    opened = [c["payload"] for c in cases if c["event_type"] == "case_trigger" and c["platform_run_id"] == run]
    charged_back = {r["event_id"] for r in due if fraud[r["payload"]["flow_id"]]}
    assert {o["case_subject_key"]["event_id"] for o in opened} == charged_back
    assert {o["trigger_type"] for o in opened} == {"EXTERNAL_SIGNAL"} and len(opened) == len(charged_back)
    assert feed_metrics["cases_opened"] == len(charged_back) > 0
    assert [d["reason"].split(":")[0] for d in dead] == ["FLOW_NOT_IN_TRUTH"]
    assert health[0] == "AMBER"  # a refused record needs a look


async def test_the_feed_reads_truth_from_the_runs_sr_facts_view(substrate: Any, tmp_path: Path) -> None:
    """A run started the operator's way (oracle sync, seal, stream-sort, `sr ready`): the feed finds the
    world through the run's SR facts view and reads the flow-anchor stream view from the object store."""
    scope = make_scope(substrate, tmp_path / "runs")
    settings = substrate.settings_for(FRAUDRT_STREAM_PREFIX=scope.prefix, FRAUDRT_RUNS_ROOT=str(tmp_path / "runs"),
                                      CASE_FEED_LEGIT_SHARE="1.0", CASE_FEED_DELAY_SECONDS="0")
    await create_streams(settings, ["control", "traffic_fraud", "case"])
    world = await oracle_world(settings, tmp_path / "w", n_flows=12)
    ready = await sr_ready(settings, ready_request(scope.run_id, world, f"feed_{scope.prefix}"))
    pins = Pins(platform_run_id=scope.run_id, scenario_run_id=ready.scenario_run_id,
                manifest_fingerprint=world.manifest_fingerprint, parameter_hash=world.parameter_hash, seed=world.seed,
                scenario_id=world.scenario_id)
    anchors = world.rows["s3_flow_anchor_with_fraud_6B"]
    truth = {a["flow_id"]: a["fraud_flag"] for a in anchors}
    requests = [traffic_request(pins, flow, i) for i, flow in enumerate(sorted(truth))]
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        await put(bus, settings.streams.name("traffic_fraud"), requests)
        async with running_plane(settings, scope.run_id, pool, bus,
                                 components=("truth_chargeback_feed", "label_store")) as p:

            async def accepted() -> int:
                return int(p.components["label_store"].metrics().get("accepted", 0))

            # Share 1 and no delay: each flow is due at its own time, which the watermark has reached.
            await wait_for(accepted, lambda n: n == len(truth), timeout=60, what="a label for every flow")
            rows = await pool.fetch("SELECT event_id, label_value FROM ls_label_assertions WHERE platform_run_id = $1",
                                    scope.run_id)
    labelled = {r["event_id"]: r["label_value"] for r in rows}
    assert labelled == {source_event_id(scope.run_id, f): "FRAUD_CONFIRMED" if fraud else "LEGIT_CONFIRMED"
                        for f, fraud in truth.items()}
