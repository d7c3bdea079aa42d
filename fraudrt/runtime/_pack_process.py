"""The body of one pack process: one event loop, every component of the manifest, shared readers.

Started detached by `fraudrt pack up` as `python -m fraudrt.runtime.pack_main <pack_id> <run>`.
SIGTERM drains: components finish their batch, readers stop, the outbox is flushed, health is
written, the process exits 0.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec

from fraudrt.config import Settings, load_settings
from fraudrt.contracts import (
    HealthReport,
    MetricsReport,
    config_digest,
    health_path,
    metrics_path,
    utc_now_ts,
    write_json_atomic,
)

from ._actor import Actor, Component, ComponentContext, Service
from ._bus import KinesisBus
from ._classify import classify
from ._fence import Notifications
from ._gc import configure_gc, freeze_heap
from ._health import worst, worst_of
from ._manifest import ComponentSpec, PackManifest, check_components, load_component_class, resolve_manifest
from ._migrations import apply_migrations
from ._outbox import OutboxRelay
from ._outbox_retention import DEFAULT_OUTBOX_RETENTION_SECONDS, OutboxPruner
from ._pgcolumns import MIN_SERVER_VERSION_NUM
from ._prometheus import PrometheusExporter
from ._reader import Delivery, ShardReader, lowest_checkpoint
from ._runner import ActorRunner
from ._runs import operate_dir, pack_run_dir
from ._supervisor import Supervision, supervise

log = logging.getLogger("fraudrt.runtime.pack")

class EventLog:
    """`runs/fraud-platform/<run>/operate/<pack_id>/events.jsonl`: the pack's lifecycle, append-only."""

    def __init__(self, path: Path, pack_id: str, platform_run_id: str) -> None:
        self.path = path
        self.pack_id = pack_id
        self.platform_run_id = platform_run_id
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: str, details: dict[str, Any]) -> None:
        line = json.dumps({"ts_utc": utc_now_ts(), "event": event, "pack_id": self.pack_id,
                           "platform_run_id": self.platform_run_id, "pid": os.getpid(), **details},
                          sort_keys=True, default=str)
        with open(self.path, "a") as fh:
            fh.write(line + "\n")


def _setup_logging(logs: Path, specs: list[ComponentSpec], pack_log: str) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    main = logging.FileHandler(logs / f"{pack_log}.log")
    main.setFormatter(fmt)
    root.addHandler(main)
    for spec in specs:
        handler = logging.FileHandler(logs / f"{spec.log_name}.log")
        handler.setFormatter(fmt)
        logging.getLogger(f"fraudrt.{spec.name}").addHandler(handler)
    logging.getLogger("aiobotocore").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)


class PackProcess:
    def __init__(self, manifest: PackManifest, settings: Settings, platform_run_id: str) -> None:
        self.manifest = manifest
        self.settings = settings
        self.run_id = platform_run_id
        self.opts = manifest.runtime
        self.events = EventLog(pack_run_dir(settings, platform_run_id, manifest.pack_id) / "events.jsonl",
                               manifest.pack_id, platform_run_id)
        self.state = "starting"
        self.components: list[tuple[ComponentSpec, Component, Supervision]] = []
        self.runners: dict[str, ActorRunner] = {}
        # One reader per (stream, shard), each supervised; streams -> the queues of their subscribers.
        self.readers: dict[tuple[str, str], ShardReader] = {}
        self.reader_sups: dict[tuple[str, str], Supervision] = {}
        self.subscribers: dict[str, list[tuple[ActorRunner, Any]]] = {}
        self.relay: OutboxRelay | None = None
        self.relay_sup = Supervision("outbox_relay", must_run=True)
        self.pruner_sup = Supervision("outbox_retention")
        self.shard_events: list[str] = []
        self.contexts: dict[str, ComponentContext] = {}
        self.backgrounds: dict[str, Supervision] = {}
        self.notifications: Notifications | None = None
        self.missing_optional: list[str] = []
        self.started_at = utc_now_ts()
        self.exporter = PrometheusExporter(self, manifest.runtime)
        self.config_digest = config_digest(msgspec.to_builtins(settings))

    # ---------------------------------------------------------------- status and health files

    def _reader_health(self, streams: list[str]) -> tuple[str, list[str]]:
        states, reasons = [], []
        for (stream, shard), sup in self.reader_sups.items():
            if stream in streams:
                state, why = worst_of(sup.health(), self.readers[(stream, shard)].health())
                states.append(state)
                reasons += [f"READER {stream}/{shard}: {r}" for r in why]
        return worst(*states), reasons

    def _health_of(self, spec: ComponentSpec, comp: Component, sup: Supervision) -> tuple[str, list[str]]:
        """A component is as healthy as the worst of what it depends on in this pack: its own view,
        its supervision, its runner (dependencies), its background task, the readers of its
        streams, and the relay once it has emitted anything."""
        parts = [comp.health(), sup.health()]
        bg = self.backgrounds.get(spec.name)
        if bg is not None:
            parts.append(bg.health())
        runner = self.runners.get(spec.name)
        if runner is not None:
            parts.append(runner.health())
            parts.append(self._reader_health(runner.actor.subscriptions(self.settings)))
            if runner.stats.emitted and self.relay is not None:
                parts.append(worst_of(self.relay_sup.health(), self.relay.health()))
        return worst(*(p[0] for p in parts)), [r for p in parts for r in p[1]]

    def _status(self, healths: dict[str, tuple[str, list[str]]]) -> dict[str, Any]:
        comps = {}
        for spec, _comp, sup in self.components:
            state, reasons = healths[spec.name]
            comps[spec.name] = {"running": sup.running, "restarts": sup.restarts, "last_error": sup.last_error,
                                "health_state": state, "reasons": reasons}
        relay_state, relay_reasons = (worst_of(self.relay_sup.health(), self.relay.health())
                                      if self.relay else ("GREEN", []))
        readers: dict[str, dict[str, Any]] = {}
        for key, reader in self.readers.items():
            state, reasons = worst_of(self.reader_sups[key].health(), reader.health())
            readers[f"{key[0]}/{key[1]}"] = {**dataclasses.asdict(reader.stats), "health_state": state,
                                             "reasons": reasons, "running": self.reader_sups[key].running}
        backgrounds: dict[str, dict[str, Any]] = {
            name: {"health_state": sup.health()[0], "reasons": sup.health()[1], "running": sup.running}
            for name, sup in self.backgrounds.items()}
        overall = worst(*(h[0] for h in healths.values()), relay_state, *(r["health_state"] for r in readers.values()),
                        *(b["health_state"] for b in backgrounds.values()), self.pruner_sup.health()[0])
        return {
            "pack_id": self.manifest.pack_id, "platform_run_id": self.run_id, "pid": os.getpid(),
            "state": self.state, "health_state": overall, "started_at_utc": self.started_at,
            "updated_at_utc": utc_now_ts(), "components": comps, "missing_optional": self.missing_optional,
            "outbox": {**dataclasses.asdict(self.relay.stats), "health_state": relay_state, "reasons": relay_reasons,
                       "restarts": self.relay_sup.restarts} if self.relay else None,
            "outbox_retention": {"health_state": self.pruner_sup.health()[0], "reasons": self.pruner_sup.health()[1]},
            "readers": readers, "backgrounds": backgrounds, "shard_events": self.shard_events[-20:],
            "metrics": self.exporter.status(), "config_digest": self.config_digest,
        }

    def _snapshot(self) -> list[tuple[Path, Any]]:
        """Every report file's path and content, computed on the event loop (cheap, consistent)."""
        runs_root = Path(self.settings.runs_root)
        now = utc_now_ts()
        files: list[tuple[Path, Any]] = []
        healths: dict[str, tuple[str, list[str]]] = {}
        for spec, comp, sup in self.components:
            state, reasons = healths[spec.name] = self._health_of(spec, comp, sup)
            runner = self.runners.get(spec.name)
            counters: dict[str, Any] = dict(runner.stats.as_dict()) if runner else {}
            lag = counters.pop("lag_ms", {})
            gauges: dict[str, Any] = {f"lag_ms.{k}": v for k, v in lag.items()}
            if runner is not None:
                gauges.update({f"watermark.{k}": v for k, v in runner.stats.watermarks.items()})
                for q, v in runner.stats.latency.summary().items():
                    gauges[f"latency_ms.arrival_to_commit.{q}"] = v
            for hop, histogram in comp.latency_histograms().items():
                for q, v in histogram.summary().items():
                    gauges[f"latency_ms.{hop}.{q}"] = v
            for k, v in comp.metrics().items():
                # Numbers are counters; strings, None and anything else a point-in-time gauge.
                if isinstance(v, bool) or not isinstance(v, int | float):
                    gauges[k] = v if v is None or isinstance(v, str | int | float) else str(v)
                else:
                    counters[k] = v
            details = {"pack_id": self.manifest.pack_id, "restarts": sup.restarts, **comp.health_details()}
            files.append((health_path(runs_root, self.run_id, spec.name), HealthReport(
                component=spec.name, platform_run_id=self.run_id, health_state=state,  # type: ignore[arg-type]
                reasons=reasons, generated_at_utc=now, details=details)))
            files.append((metrics_path(runs_root, self.run_id, spec.name), MetricsReport(
                component=spec.name, platform_run_id=self.run_id, generated_at_utc=now,
                counters={k: v for k, v in counters.items() if isinstance(v, int | float)}, gauges=gauges)))
        files.append((operate_dir(self.settings, self.manifest.pack_id) / "status" / "last_status.json",
                      self._status(healths)))
        return files

    def write_reports(self) -> None:
        for path, content in self._snapshot():
            write_json_atomic(path, content)

    async def _write_reports_off_loop(self) -> None:
        files = self._snapshot()
        # fsyncs (two per file) off the event loop: a slow disk must not stall the readers.
        def write_all() -> None:
            for path, content in files:
                write_json_atomic(path, content)

        await anyio.to_thread.run_sync(write_all)

    async def _report_loop(self) -> None:
        interval = float(self.opts.get("health_interval_seconds", 2.0))
        while True:
            try:
                if self.relay is not None:
                    await self.relay.refresh_status()
            except Exception as exc:
                log.warning("could not read the outbox status: %r", exc)
            try:
                await self._write_reports_off_loop()
            except Exception:
                log.exception("could not write reports")
            await anyio.sleep(interval)

    # ---------------------------------------------------------------- lifecycle

    async def run(self) -> int:
        ready, missing, self.missing_optional = check_components(self.manifest)
        if missing:
            log.error("missing components: %s", missing)
            self.events("pack_failed", {"missing": missing})
            return 2
        stopping = anyio.Event()
        dsn = self.settings.postgres.dsn
        if not dsn:
            log.error("no Postgres DSN configured")
            return 2
        # jit off for every profile: batch statements lose 0.3-0.6 s to JIT compilation (see _services.py).
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=int(self.opts.get("pool_max", 8)),
                                         server_settings={"jit": "off"})
        try:
            version = int(await pool.fetchval("SHOW server_version_num"))
            if version < MIN_SERVER_VERSION_NUM:
                log.error("PostgreSQL %d or later is required (batch statements use trim_array); the server is %s",
                          MIN_SERVER_VERSION_NUM // 10000, version)
                self.events("pack_failed", {"postgres_server_version_num": version})
                return 2
            await self.exporter.start()
            async with KinesisBus(self.settings.kinesis) as bus:
                return await self._run(ready, pool, bus, stopping)
        finally:
            await self.exporter.stop()
            if self.notifications is not None:
                await self.notifications.close()
            await pool.close()

    async def _run(self, ready: list[ComponentSpec], pool: Any, bus: KinesisBus, stopping: anyio.Event) -> int:
        instances = [(spec, load_component_class(spec)()) for spec in ready]
        packages = ["fraudrt.runtime"] + [p for _, c in instances for p in c.sql_packages]
        async with pool.acquire() as conn:
            await apply_migrations(conn, *dict.fromkeys(packages))
        self.relay = OutboxRelay(pool, bus, owner=self.manifest.pack_id)
        queue_depth = int(self.opts.get("queue_depth", 4))
        subscriptions: dict[str, list[tuple[ActorRunner, Any]]] = {}
        assert self.settings.postgres.dsn
        self.notifications = Notifications(self.settings.postgres.dsn)
        for spec, comp in instances:
            sup = Supervision(spec.name, must_run=True)
            self.components.append((spec, comp, sup))
            ctx = ComponentContext(settings=self.settings, platform_run_id=self.run_id,
                                   pack_id=self.manifest.pack_id, pool=pool, component=spec.name,
                                   options=dict(spec.options), notifications=self.notifications,
                                   logger=logging.getLogger(f"fraudrt.{spec.name}"), stopping=stopping)
            self.contexts[spec.name] = ctx
            if isinstance(comp, Actor):
                send, receive = anyio.create_memory_object_stream[Delivery](max_buffer_size=queue_depth)
                runner = ActorRunner(comp, ctx, receive, self.relay)
                await runner.load()
                self.runners[spec.name] = runner
                for stream in comp.subscriptions(self.settings):
                    subscriptions.setdefault(stream, []).append((runner, send))
        self.subscribers = subscriptions
        self._bus = bus
        shards = {stream: await bus.describe_shards(stream) for stream in subscriptions}
        for stream, infos in shards.items():
            for info in infos:
                self._add_reader(stream, info.shard_id)
        self.events("pack_started", {"components": [s.name for s, _ in instances],
                                     "missing_optional": self.missing_optional,
                                     "readers": [f"{k[0]}/{k[1]}" for k in self.readers]})
        self.state = "running"

        def on_signal() -> None:
            if not stopping.is_set():
                log.info("drain requested")
                self.events("drain_started", {})
                self.state = "draining"
                stopping.set()

        async with anyio.create_task_group() as outer:
            outer.start_soon(self._watch_signals, on_signal)
            outer.start_soon(self._report_loop)
            outer.start_soon(self._freeze_after_startup)
            reader_scope = anyio.CancelScope()

            async def readers() -> None:
                with reader_scope:
                    async with anyio.create_task_group() as rtg:
                        for key in list(self.readers):
                            self._start_reader(rtg, key, stopping)
                        rtg.start_soon(self._watch_shards, rtg, stopping)

            outer.start_soon(readers)
            relay_done = anyio.Event()

            async def relay() -> None:
                assert self.relay is not None
                relay = self.relay
                await supervise(self.relay_sup, lambda: relay.run(stopping), stopping, self.events, log)
                relay_done.set()

            outer.start_soon(relay)
            retention = self.opts.get("outbox_retention_seconds", DEFAULT_OUTBOX_RETENTION_SECONDS)
            if retention:
                pruner = OutboxPruner(pool, self.manifest.pack_id, float(retention),
                                      interval_seconds=float(self.opts.get("outbox_retention_interval_seconds", 60)))
                outer.start_soon(supervise, self.pruner_sup, lambda: pruner.run(stopping), stopping,
                                 self.events, log)
            async with anyio.create_task_group() as work:
                for spec, comp, sup in self.components:
                    body = self._body(spec, comp)
                    comp_log = logging.getLogger(f"fraudrt.{spec.name}")
                    work.start_soon(supervise, sup, body, stopping, self.events, comp_log)
                    if isinstance(comp, Actor) and comp.has_background:
                        ctx = self.contexts[spec.name]
                        bg = Supervision(f"{spec.name}:background")
                        self.backgrounds[spec.name] = bg
                        work.start_soon(supervise, bg, lambda c=comp, x=ctx: c.background(x), stopping,
                                        self.events, comp_log)
            # Every component has returned (drained). Stop reading, then flush what they emitted.
            reader_scope.cancel()
            with anyio.move_on_after(float(self.opts.get("drain_timeout_seconds", 30))):
                await relay_done.wait()
            pending: int | str
            try:
                pending = await self.relay.flush(timeout=10.0)
            except Exception as exc:
                # The drain still ends in order: reports, pack_stopped, exit. What is left is
                # published by the next start (the rows are durable).
                log.warning("final outbox flush failed: %r", exc)
                pending = f"unknown ({classify(exc).code})"
            self.state = "stopped"
            try:
                self.write_reports()
            except Exception:
                log.exception("could not write the final reports")
            self.events("pack_stopped", {"outbox_pending": pending})
            outer.cancel_scope.cancel()
        return 0

    # ---------------------------------------------------------------- readers and shards

    def _add_reader(self, stream: str, shard_id: str) -> tuple[str, str]:
        subs = self.subscribers[stream]
        start = lowest_checkpoint([r.checkpoints.get((stream, shard_id)) for r, _ in subs])
        key = (stream, shard_id)
        self.readers[key] = ShardReader(self._bus, stream, shard_id, [s for _, s in subs], start,
                                        limit=int(self.opts.get("read_limit", 5000)),
                                        idle_sleep_min=float(self.opts.get("read_idle_min_seconds", 0.01)),
                                        idle_sleep_max=float(self.opts.get("read_idle_max_seconds", 0.2)))
        self.reader_sups[key] = Supervision(f"reader:{stream}/{shard_id}")
        return key

    def _start_reader(self, tg: Any, key: tuple[str, str], stopping: anyio.Event) -> None:
        reader = self.readers[key]
        tg.start_soon(supervise, self.reader_sups[key], lambda: reader.run(stopping), stopping, self.events, log)

    async def _watch_shards(self, tg: Any, stopping: anyio.Event) -> None:
        """Resharding: pick up shards created while the pack runs, a child only once the readers of
        its parents have reached the end of their (closed) shards, so a key's records stay in order."""
        interval = float(self.opts.get("shard_watch_seconds", 30))
        while not stopping.is_set():
            with anyio.move_on_after(interval):
                await stopping.wait()
            if stopping.is_set():
                return
            for stream in self.subscribers:
                try:
                    infos = await self._bus.describe_shards(stream)
                except Exception as exc:
                    if not classify(exc).transient:
                        raise
                    continue
                for info in infos:
                    key = (stream, info.shard_id)
                    if key in self.readers:
                        continue
                    waiting = [p for p in info.parents if (stream, p) in self.readers
                               and not self.readers[(stream, p)].finished]
                    if waiting:
                        continue
                    self._add_reader(stream, info.shard_id)
                    self._start_reader(tg, key, stopping)
                    note = f"{stream}/{info.shard_id} (parents {', '.join(info.parents) or 'none'})"
                    self.shard_events.append(f"reading new shard {note}")
                    log.info("reading new shard %s", note)
                    self.events("shard_added", {"stream": stream, "shard_id": info.shard_id,
                                                "parents": list(info.parents)})

    async def _freeze_after_startup(self) -> None:
        # A service that never gets ready (a dependency down) must not keep the heap unfrozen
        # forever: after the deadline the pack freezes what it has.
        readies = [comp.ready for _, comp, _ in self.components if isinstance(comp, Service) and comp.ready]
        with anyio.move_on_after(float(self.opts.get("freeze_after_seconds", 60))):
            for ready in readies:
                await ready.wait()
        freeze_heap()
        self.events("heap_frozen", {"services_ready": sum(r.is_set() for r in readies), "services": len(readies)})

    def _body(self, spec: ComponentSpec, comp: Component) -> Any:
        if isinstance(comp, Actor):
            return self.runners[spec.name].run
        assert isinstance(comp, Service)
        ctx = self.contexts[spec.name]
        return lambda: comp.run(ctx)

    async def _watch_signals(self, on_signal: Any) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _sig in signals:
                on_signal()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m fraudrt.runtime.pack_main <pack_id> <platform_run_id>", file=sys.stderr)
        return 2
    pack_id, run_id = args
    settings = load_settings()
    manifest = resolve_manifest(pack_id)
    logs = pack_run_dir(settings, run_id, manifest.pack_id) / "logs"
    _setup_logging(logs, manifest.components, manifest.short_name)
    configure_gc()
    log.info("pack %s starting for %s (pid %d)", manifest.pack_id, run_id, os.getpid())
    started = time.monotonic()
    code = anyio.run(PackProcess(manifest, settings, run_id).run)
    log.info("pack %s exited %d after %.1fs", manifest.pack_id, code, time.monotonic() - started)
    return code
