"""Cases keyed by an entity (`case_subject: party`): the flows of one party share one case, read through the
Context Store's reader from a generated world's context, and a failed action joins its decision's case."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from fraudrt.config import project_root
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations
from fraudrt.substrate import bootstrap

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.engine import output_paths, read_run_receipt_raw
from fraudrt.rtdl.context_store_flow_binding import ContextStoreFlowBinding
from fraudrt.rtdl.context_store_flow_binding.reader import resolve_flow_binding
from tests.support.case_lane import decision, outcome, run_pins, running_plane
from tests.support.harness import LocalActor, mint_run_id, new_prefix, open_pool, put, wait_for
from tests.support.rtdl_world import CONTEXT_OUTPUTS, envelopes, make_world

pytestmark = pytest.mark.integration


async def test_one_case_per_party_and_a_failed_action_joins_it(substrate: Any, tmp_path: Path) -> None:
    root = make_world(tmp_path / "world", n_flows=200, seed=5)
    settings = substrate.settings_for(FRAUDRT_STREAM_PREFIX=new_prefix(), FRAUDRT_RUNS_ROOT=str(tmp_path / "runs"),
                                      CASE_SUBJECT="party")
    await bootstrap(settings)
    run = mint_run_id()
    scenario = read_run_receipt_raw(root)["scenario_ids"][0]
    anchors = pl.read_parquet(output_paths(root, "s3_flow_anchor_with_fraud_6B", scenario),
                              columns=["flow_id", "party_id"])
    shared = anchors.group_by("party_id").agg(pl.col("flow_id").sort()).filter(pl.col("flow_id").list.len() >= 2)
    party, flows = shared["party_id"][0], shared["flow_id"][0].to_list()
    f1, f2 = flows[0], flows[1]
    f3 = anchors.filter(pl.col("party_id") != party)["flow_id"][0]
    stranger = 10**12  # no binding: a flow case, counted as a fallback
    pins = run_pins(run)
    d1, d2 = decision(pins, f1, action="REVIEW", score=0.6), decision(pins, f2, action="DECLINE", score=0.9)
    d3, d4 = decision(pins, f3, action="APPROVE", score=0.1), decision(pins, stranger, action="REVIEW", score=0.6)
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        async with pool.acquire() as conn:
            await apply_migrations(conn, *ContextStoreFlowBinding.sql_packages)
        for logical in ("arrival_events", "arrival_entities", "flow_anchor_fraud"):
            await put(bus, settings.streams.name(logical), envelopes(root, CONTEXT_OUTPUTS[logical], run))
        async with LocalActor(settings, ContextStoreFlowBinding(), run, pool, bus):

            async def bound() -> int:
                got = await resolve_flow_binding(pool, run, [f1, f2, f3])
                return sum(b.anchor is not None for b in got.values())

            await wait_for(bound, lambda n: n == 3, timeout=60, what="the three flows bound")
        await put(bus, settings.streams.name("rtdl"), [d1.envelope, d2.envelope, d3.envelope, d4.envelope,
                                                       outcome(pins, d3.payload, "FAILED"),
                                                       outcome(pins, d1.payload, "FAILED")])
        async with running_plane(settings, run, pool, bus, components=("case_trigger", "case_mgmt")) as plane:

            async def triggers() -> int:
                return int(plane.case_mgmt.metrics().get("triggers", 0))

            await wait_for(triggers, lambda n: n == 5, what="five triggers taken in")
            ct_metrics = plane.components["case_trigger"].metrics()
            cases = await pool.fetch("SELECT subject_class, subject_id, trigger_count, trigger_types FROM cm_cases "
                                     "WHERE platform_run_id = $1 ORDER BY subject_class, subject_id", run)
    by_subject = {(c["subject_class"], c["subject_id"]): c for c in cases}
    party3 = str(anchors.filter(pl.col("flow_id") == f3)["party_id"][0])
    assert set(by_subject) == {("entity:party", str(party)), ("entity:party", party3),
                               ("auth_request", d4.payload.source_event.event_id)}
    assert by_subject[("entity:party", str(party))]["trigger_count"] == 3  # two decisions and a failed action
    assert list(by_subject[("entity:party", str(party))]["trigger_types"]) == ["ACTION_FAILURE",
                                                                                "DECISION_ESCALATION"]
    # f3's decision did not escalate, but its subject was kept: its failed action opens the party's case.
    assert list(by_subject[("entity:party", party3)]["trigger_types"]) == ["ACTION_FAILURE"]
    assert ct_metrics["subject_fallbacks"] == 1
