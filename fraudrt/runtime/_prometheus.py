"""`/metrics` of a pack process in the Prometheus text format: what its health and metrics files hold.

Each scrape renders the pack's current snapshot (the same `HealthReport`/`MetricsReport` objects
the report loop writes every 2 s, computed on the event loop, so a scrape and a file never
disagree about what a number means) plus the latency histograms the components keep:

- numeric counters -> `fraudrt_<name>_total` (counter), numeric gauges -> `fraudrt_<name>` (gauge),
  labelled `pack_id`, `platform_run_id`, `component`; string gauges (ISO watermarks, ids) are left
  out (Prometheus has numbers only);
- health -> `fraudrt_health_state{component, state}`, 1 for the current state, 0 for the others;
- every `LatencyHistogram` -> `fraudrt_latency_seconds{component, hop}` (histogram): the runtime's
  `arrival_to_commit` per actor and whatever a component returns from an optional
  `latency_histograms() -> {hop: LatencyHistogram}`.

The server binds 127.0.0.1 on a free port unless the manifest's `runtime.metrics_host` /
`metrics_port` say otherwise; the pack's status file records the URL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fraudrt.contracts import HealthReport, MetricsReport

from ._latency import LatencyHistogram

log = logging.getLogger("fraudrt.runtime.prometheus")

_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_STATES = ("GREEN", "AMBER", "RED")


class PackView(Protocol):
    """What the exporter reads of a running pack (`PackProcess` satisfies it)."""

    run_id: str
    components: list[Any]
    runners: dict[str, Any]

    @property
    def manifest(self) -> Any: ...

    def _snapshot(self) -> list[tuple[Any, Any]]: ...


def metric_name(name: str) -> str:
    """`fraudrt_` + the name with every character Prometheus does not allow turned into `_`."""
    cleaned = _INVALID.sub("_", name).strip("_").lower()
    return "fraudrt_" + (cleaned or "unnamed")


def histograms_of(pack: PackView) -> Iterator[tuple[str, str, LatencyHistogram]]:
    """(component, hop, histogram) for every histogram the pack keeps."""
    for spec, comp, _sup in pack.components:
        runner = pack.runners.get(spec.name)
        if runner is not None:
            yield spec.name, "arrival_to_commit", runner.stats.latency
        own = getattr(comp, "latency_histograms", None)
        if callable(own):
            for hop, hist in own().items():
                if isinstance(hist, LatencyHistogram):
                    yield spec.name, str(hop), hist


def families(pack_id: str, run_id: str, reports: Iterable[Any],
             histograms: Iterable[tuple[str, str, LatencyHistogram]]) -> list[Metric]:
    """The metric families of one snapshot. A name used as a counter by one component and as a
    gauge by another gets `_gauge` on the gauge, so one family never has two types."""
    labels = ["pack_id", "platform_run_id", "component"]
    counters: dict[str, CounterMetricFamily] = {}
    gauges: dict[str, GaugeMetricFamily] = {}
    health = GaugeMetricFamily("fraudrt_health_state", "Component health (1 = the current state)",
                               labels=[*labels, "state"])
    metrics = [r for r in reports if isinstance(r, MetricsReport)]
    for report in metrics:
        for key, value in report.counters.items():
            name = metric_name(key.removesuffix("_total"))
            fam = counters.get(name)
            if fam is None:
                fam = counters[name] = CounterMetricFamily(name, f"{key} (counter)", labels=labels)
            fam.add_metric([pack_id, run_id, report.component], float(value))
    for report in metrics:
        for key, gauge in report.gauges.items():
            if isinstance(gauge, bool) or not isinstance(gauge, int | float):
                continue
            name = metric_name(key)
            if name in counters or name.removesuffix("_total") in counters:
                name += "_gauge"
            fam_g = gauges.get(name)
            if fam_g is None:
                fam_g = gauges[name] = GaugeMetricFamily(name, f"{key} (gauge)", labels=labels)
            fam_g.add_metric([pack_id, run_id, report.component], float(gauge))
    for report in reports:
        if isinstance(report, HealthReport):
            for state in _STATES:
                health.add_metric([pack_id, run_id, report.component, state],
                                  1.0 if report.health_state == state else 0.0)
    latency = HistogramMetricFamily("fraudrt_latency_seconds", "Latency per hop (log buckets, x1.1)",
                                    labels=[*labels, "hop"])
    for component, hop, hist in histograms:
        buckets = [(f"{upper / 1000.0:.6g}", float(cum)) for upper, cum in hist.buckets()]
        buckets.append(("+Inf", float(hist.total)))
        latency.add_metric([pack_id, run_id, component, hop], buckets, hist.sum_ms / 1000.0)
    return [*counters.values(), *gauges.values(), health, latency]


class _SnapshotCollector:
    def __init__(self, pack: PackView) -> None:
        self.pack = pack

    def collect(self) -> Iterable[Metric]:
        reports = [content for _path, content in self.pack._snapshot()]
        return families(self.pack.manifest.pack_id, self.pack.run_id, reports, histograms_of(self.pack))


class PrometheusExporter:
    """An aiohttp site on the pack's own event loop: a scrape never races the components."""

    def __init__(self, pack: PackView, options: Mapping[str, Any]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(pack))  # type: ignore[arg-type]
        self.host = str(options.get("metrics_host", "127.0.0.1"))
        self.port = int(options.get("metrics_port", 0))
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        # Port 0 asks the OS for a free one: read back the port it gave.
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("metrics at %s", self.url)

    @property
    def url(self) -> str | None:
        return f"http://{self.host}:{self.port}/metrics" if self._runner is not None else None

    def status(self) -> dict[str, Any]:
        return {"url": self.url, "host": self.host, "port": self.port if self._runner else None}

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
