"""The IEG in the real rtdl_core pack process: a world's anchors in, the graph and step-8 evidence out.

`fraudrt pack up rtdl_core` runs the IEG beside ArchiveWriter; its health and metrics files (what
`make parity` and the degrade ladder read) report the flows applied, the edges and entities by type
and the applied event-time watermark, and the health is GREEN once the stream goes idle.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support: imported here and by pack processes

from fraudrt.contracts import health_path, metrics_path
from fraudrt.rtdl.identity_entity_graph import graph_edges, graph_entities, graph_features, observations
from fraudrt.rtdl.identity_entity_graph.offline import ANCHOR_COLUMNS
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import pack_down, pack_up
from fraudrt.substrate import bootstrap
from tests.support.harness import kill_pack, make_scope, open_pool, put, wait_for
from tests.support.world_bus import WorldPins, generate, output_rows

pytestmark = pytest.mark.e2e

CORE = "local_parity_rtdl_core_v0"
ANCHORS = "s3_flow_anchor_with_fraud_6B"


async def test_the_rtdl_core_pack_projects_the_graph_and_reports_it(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUDRT_PACKS_DIR", raising=False)
    scope = make_scope(substrate, tmp_path / "runs")
    settings, run = scope.settings, scope.run_id
    await bootstrap(settings)
    world = generate(tmp_path / "world", n_flows=1500, seed=5, fraud_rate=0.05)
    anchors = output_rows(world, ANCHORS)
    runs_root = Path(settings.runs_root)
    try:
        started = await anyio.to_thread.run_sync(
            lambda: pack_up(settings, "rtdl_core", platform_run_id=run, env=scope.env))
        assert started["state"] == "started"
        async with KinesisBus(settings.kinesis) as bus, open_pool(settings) as pool:
            stream = settings.streams.name("flow_anchor_fraud")
            await put(bus, stream, WorldPins(world, run).envelopes(ANCHORS, anchors))

            async def report() -> tuple[dict[str, Any], dict[str, Any]]:
                try:
                    return (json.loads(metrics_path(runs_root, run, "identity_entity_graph").read_text()),
                            json.loads(health_path(runs_root, run, "identity_entity_graph").read_text()))
                except FileNotFoundError:
                    return {}, {}

            # Caught up, then idle: the last files say so, and GREEN (an idle stream is healthy).
            metrics, health = await wait_for(
                report, lambda mh: mh[0].get("counters", {}).get("flows_applied_total") == anchors.height
                and mh[1].get("health_state") == "GREEN", timeout=90, interval=0.5,
                what="every anchor applied and the IEG GREEN")
            answers = await graph_features(pool, run, anchors["flow_id"].to_list())
        assert all(g.complete for g in answers)
        stopped = await anyio.to_thread.run_sync(lambda: pack_down(settings, "rtdl_core", timeout=30))
        assert stopped["state"] == "stopped"
    finally:
        kill_pack(settings, CORE)
    obs = observations(anchors.select(ANCHOR_COLUMNS))
    counters = metrics["counters"]
    edges, entities = graph_edges(obs), graph_entities(obs)
    assert counters["edges_total"] == edges.height and counters["entities_total"] == entities.height
    for edge_type, n in edges.group_by("edge_type").len().iter_rows():
        assert counters[f"edges_{edge_type}_total"] == n
    for entity_type, n in entities.group_by("entity_type").len().iter_rows():
        assert counters[f"entities_{entity_type}_total"] == n
    assert counters["dead_letters_total"] == 0 and counters["flows_waiting"] == 0
    gauges, details = metrics["gauges"], health["details"]
    assert gauges["applied_watermark_ts_utc"] == details["applied_watermark_ts_utc"] == anchors["ts_utc"].max()
    newest = answers[anchors["ts_utc"].arg_max()]  # type: ignore[index]
    assert gauges["graph_version"] == details["graph_version"] == newest.graph_version
