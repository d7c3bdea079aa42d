"""The simulated chargeback feed on a generated world: the share it labels, values from the world's truth,
labels known only a delay after the flow (in the world's clock), each flow labelled once, into the Label
Store as EXTERNAL training truth."""

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
from fraudrt.engine import output_paths, read_run_receipt_raw
from tests.support.case_lane import run_pins, running_plane, traffic_request
from tests.support.harness import mint_run_id, new_prefix, open_pool, put, wait_for
from tests.support.rtdl_world import envelopes, make_world

pytestmark = pytest.mark.integration

SHARE, DELAY = 0.5, 2.0
TRAFFIC = "s3_event_stream_with_fraud_6B"


async def test_the_feed_labels_a_share_of_flows_from_truth_after_the_delay(substrate: Any, tmp_path: Path) -> None:
    root = make_world(tmp_path / "world", n_flows=300, seed=11, fraud_rate=0.2)
    settings = substrate.settings_for(FRAUDRT_STREAM_PREFIX=new_prefix(), FRAUDRT_RUNS_ROOT=str(tmp_path / "runs"),
                                      CASE_FEED_TRUTH_ENGINE_RUN_ROOT=str(root), CASE_FEED_SHARE=str(SHARE),
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
    picked = [r for r in requests if selected(run, r["payload"]["flow_id"], SHARE)]
    due = [r for r in picked if parse_ts_utc(r["ts_utc"]) + timedelta(seconds=DELAY) <= last]
    assert 0 < len(due) < len(picked) and any(fraud[r["payload"]["flow_id"]] for r in due)
    # A selected flow the world does not hold: refused with its reason, never labelled from nothing.
    stranger = next(f for f in range(10**9, 10**9 + 100) if selected(run, f, SHARE))
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
    assert [d["reason"].split(":")[0] for d in dead] == ["FLOW_NOT_IN_TRUTH"]
    assert health[0] == "AMBER"  # a refused record needs a look
