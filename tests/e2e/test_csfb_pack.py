"""CSFB in a real rtdl_core pack process: a world's context in, step 8's evidence files out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import health_path, metrics_path
from fraudrt.rtdl.context_store_flow_binding import progress, resolve_flow_binding
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import pack_down, pack_up
from fraudrt.substrate import bootstrap
from tests.support.harness import kill_pack, make_scope, put, wait_for
from tests.support.rtdl_world import envelopes, make_world

pytestmark = pytest.mark.e2e

CORE = "local_parity_rtdl_core_v0"
CSFB = "context_store_flow_binding"
OUTPUT_OF = {"arrival_events": "arrival_events_5B", "arrival_entities": "s1_arrival_entities_6B",
             "flow_anchor_fraud": "s3_flow_anchor_with_fraud_6B"}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return doc


async def test_rtdl_core_pack_binds_a_world_and_reports_join_counters(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUDRT_PACKS_DIR", raising=False)
    scope = make_scope(substrate, tmp_path / "runs")
    settings, run = scope.settings, scope.run_id
    await bootstrap(settings)
    world = make_world(tmp_path / "world", n_flows=300, seed=21)
    runs_root = Path(settings.runs_root)
    try:
        await anyio.to_thread.run_sync(lambda: pack_up(settings, "rtdl_core", platform_run_id=run, env=scope.env))
        async with KinesisBus(settings.kinesis) as bus:
            for logical, output in OUTPUT_OF.items():
                await put(bus, settings.streams.name(logical), envelopes(world, output, run))

        async def metrics() -> dict[str, Any] | None:
            return _read(metrics_path(runs_root, run, CSFB))

        report = await wait_for(metrics, lambda m: m is not None and m["counters"].get("bindings_total") == 300
                                and m["counters"].get("join_misses") == 0, timeout=90,
                                what="CSFB metrics with every binding complete")
        assert report is not None
        counters = report["counters"]
        assert counters["join_hits"] + counters["late_joins"] == 300
        assert counters["frames_complete"] == counters["frames_total"] == 300
        assert counters["dead_letters_total"] == 0
        assert report["gauges"]["applied_watermark.flow_anchor"].startswith("2026-01-01T")
        health = await wait_for(lambda: anyio.to_thread.run_sync(_read, health_path(runs_root, run, CSFB)),
                                lambda h: h is not None and h["health_state"] == "GREEN", timeout=30,
                                what="CSFB health GREEN once caught up")
        assert health is not None and health["details"]["watermarks"]["flow_anchor"].startswith("2026-01-01T")

        conn = await asyncpg.connect(settings.postgres.dsn)
        try:
            p = await progress(conn, run)
            assert (p.bindings_total, p.join_misses) == (300, 0)
            flow = json.loads(envelopes(world, OUTPUT_OF["flow_anchor_fraud"], run)[0])["payload"]["flow_id"]
            assert (await resolve_flow_binding(conn, run, [flow]))[flow].complete
        finally:
            await conn.close()
        stopped = await anyio.to_thread.run_sync(lambda: pack_down(settings, "rtdl_core", timeout=30))
        assert stopped["state"] == "stopped"
    finally:
        kill_pack(settings, CORE)
