"""A live pack serves what its health and metrics files hold at `/metrics`, in the Prometheus text
format, on a loopback port its status file names: a standard scraper (here prometheus_client's own
parser over a plain HTTP GET) sees the counters, the health state and the latency histogram."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import metrics_path
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import pack_status, pack_up
from tests.support.harness import create_streams, kill_pack, make_scope, put, record, wait_for

pytestmark = pytest.mark.e2e


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_a_live_pack_serves_its_counters_health_and_latency_histogram_at_metrics(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", scope.env["FRAUDRT_PACKS_DIR"])
    settings = scope.settings
    (traffic,) = await create_streams(settings, ["traffic_fraud"])
    async with KinesisBus(settings.kinesis) as bus:
        await put(bus, traffic, [record(scope.run_id, n=i) for i in range(7)])
    try:
        await anyio.to_thread.run_sync(lambda: pack_up(settings, "test_recorder", platform_run_id=scope.run_id,
                                                       env=scope.env))
        status = await wait_for(lambda: anyio.to_thread.run_sync(lambda: pack_status(settings, "test_recorder")),
                                lambda s: s["components"].get("test_recorder", {}).get("running", False),
                                timeout=60, what="the recorder running")
        raw = json.loads((Path(settings.runs_root) / "fraud-platform" / "operate" / "test_recorder_v0" / "status" /
                          "last_status.json").read_text())
        url = raw["metrics"]["url"]
        assert urlsplit(url).hostname == "127.0.0.1", url
        labels = (("component", "test_recorder"), ("pack_id", "test_recorder_v0"), ("platform_run_id", scope.run_id))

        async with aiohttp.ClientSession() as http:
            async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                async with http.get(url) as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"].startswith("text/plain")
                    return _samples(await resp.text())

            got = await wait_for(scrape, lambda s: s.get(("fraudrt_handled_total", labels)) == 7.0,
                                 timeout=60, interval=0.5, what="7 records handled, as scraped")
        assert got[("fraudrt_health_state", tuple(sorted((*labels, ("state", "GREEN")))))] == 1.0
        assert got[("fraudrt_health_state", tuple(sorted((*labels, ("state", "RED")))))] == 0.0
        hop = tuple(sorted((*labels, ("hop", "arrival_to_commit"))))
        assert got[("fraudrt_latency_seconds_count", hop)] == 7.0
        assert got[("fraudrt_latency_seconds_bucket", tuple(sorted((*hop, ("le", "+Inf")))))] == 7.0
        assert got[("fraudrt_latency_seconds_sum", hop)] > 0
        # The same numbers the metrics file holds (one report interval later at most).
        path = metrics_path(Path(settings.runs_root), scope.run_id, "test_recorder")

        async def from_file() -> dict[str, Any]:
            data: dict[str, Any] = json.loads(path.read_text())
            return data

        await wait_for(from_file, lambda m: m["counters"]["handled_total"] == 7, timeout=30,
                       what="the metrics file at 7 handled")
        assert status["state"] == "running"
    finally:
        kill_pack(settings, "test_recorder_v0")
