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

from fraudrt.config import Settings, load_settings
from fraudrt.contracts import (
    HealthReport,
    MetricsReport,
    health_path,
    metrics_path,
    utc_now_ts,
    write_json_atomic,
)

from ._actor import Actor, Component, ComponentContext, Service
from ._bus import KinesisBus
from ._fence import Notifications
from ._gc import configure_gc, freeze_heap
from ._manifest import ComponentSpec, PackManifest, check_components, load_component_class, resolve_manifest
from ._migrations import apply_migrations
from ._outbox import OutboxRelay
from ._outbox_retention import DEFAULT_OUTBOX_RETENTION_SECONDS, OutboxPruner
from ._pgcolumns import MIN_SERVER_VERSION_NUM
from ._reader import Delivery, ShardReader, lowest_checkpoint
from ._runner import ActorRunner
from ._runs import operate_dir, pack_run_dir
from ._supervisor import Supervision, supervise

log = logging.getLogger("fraudrt.runtime.pack")

_WORST = {"GREEN": 0, "AMBER": 1, "RED": 2}


def worst(*states: str) -> str:
    return max(states, key=lambda s: _WORST.get(s, 2)) if states else "GREEN"


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
        self.readers: list[ShardReader] = []
        self.relay: OutboxRelay | None = None
        self.contexts: dict[str, ComponentContext] = {}
        self.backgrounds: dict[str, Supervision] = {}
        self.notifications: Notifications | None = None
        self.missing_optional: list[str] = []
        self.started_at = utc_now_ts()

    # ---------------------------------------------------------------- status and health files

    def _status(self) -> dict[str, Any]:
        comps = {}
        for spec, comp, sup in self.components:
            state, reasons = self._health_of(comp, sup)
            comps[spec.name] = {"running": sup.running, "restarts": sup.restarts, "last_error": sup.last_error,
                                "health_state": state, "reasons": reasons}
        return {
            "pack_id": self.manifest.pack_id, "platform_run_id": self.run_id, "pid": os.getpid(),
            "state": self.state, "started_at_utc": self.started_at, "updated_at_utc": utc_now_ts(),
            "components": comps, "missing_optional": self.missing_optional,
            "outbox": dataclasses.asdict(self.relay.stats) if self.relay else None,
            "readers": {f"{r.stream}/{r.shard_id}": dataclasses.asdict(r.stats) for r in self.readers},
        }

    def _health_of(self, comp: Component, sup: Supervision) -> tuple[str, list[str]]:
        own_state, own_reasons = comp.health()
        sup_state, sup_reasons = sup.health()
        bg = self.backgrounds.get(comp.name)
        bg_state, bg_reasons = bg.health() if bg else ("GREEN", [])
        return worst(own_state, sup_state, bg_state), sup_reasons + bg_reasons + own_reasons

    def write_reports(self) -> None:
        runs_root = Path(self.settings.runs_root)
        now = utc_now_ts()
        for spec, comp, sup in self.components:
            state, reasons = self._health_of(comp, sup)
            runner = self.runners.get(spec.name)
            counters: dict[str, Any] = dict(runner.stats.as_dict()) if runner else {}
            lag = counters.pop("lag_ms", {})
            counters.update(comp.metrics())
            details = {"pack_id": self.manifest.pack_id, "restarts": sup.restarts, **comp.health_details()}
            write_json_atomic(health_path(runs_root, self.run_id, spec.name), HealthReport(
                component=spec.name, platform_run_id=self.run_id, health_state=state,  # type: ignore[arg-type]
                reasons=reasons, generated_at_utc=now, details=details))
            write_json_atomic(metrics_path(runs_root, self.run_id, spec.name), MetricsReport(
                component=spec.name, platform_run_id=self.run_id, generated_at_utc=now,
                counters={k: v for k, v in counters.items() if isinstance(v, int | float)},
                gauges={f"lag_ms.{k}": v for k, v in lag.items()}))
        write_json_atomic(operate_dir(self.settings, self.manifest.pack_id) / "status" / "last_status.json",
                          self._status())

    async def _report_loop(self) -> None:
        interval = float(self.opts.get("health_interval_seconds", 2.0))
        while True:
            try:
                self.write_reports()
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
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=int(self.opts.get("pool_max", 8)))
        try:
            version = int(await pool.fetchval("SHOW server_version_num"))
            if version < MIN_SERVER_VERSION_NUM:
                log.error("PostgreSQL %d or later is required (batch statements use trim_array); the server is %s",
                          MIN_SERVER_VERSION_NUM // 10000, version)
                self.events("pack_failed", {"postgres_server_version_num": version})
                return 2
            async with KinesisBus(self.settings.kinesis) as bus:
                return await self._run(ready, pool, bus, stopping)
        finally:
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
        for stream, subs in subscriptions.items():
            for shard in await bus.list_shards(stream):
                start = lowest_checkpoint([r.checkpoints.get((stream, shard)) for r, _ in subs])
                self.readers.append(ShardReader(bus, stream, shard, [s for _, s in subs], start,
                                                limit=int(self.opts.get("read_limit", 5000))))
        self.events("pack_started", {"components": [s.name for s, _ in instances],
                                     "missing_optional": self.missing_optional,
                                     "readers": [f"{r.stream}/{r.shard_id}" for r in self.readers]})
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
                        for reader in self.readers:
                            sup = Supervision(f"reader:{reader.stream}/{reader.shard_id}")
                            rtg.start_soon(supervise, sup, lambda r=reader: r.run(stopping), stopping,
                                           self.events, log)

            outer.start_soon(readers)
            relay_done = anyio.Event()

            async def relay() -> None:
                assert self.relay is not None
                sup = Supervision("outbox_relay")
                await supervise(sup, lambda: self.relay.run(stopping), stopping, self.events, log)  # type: ignore[union-attr]
                relay_done.set()

            outer.start_soon(relay)
            retention = self.opts.get("outbox_retention_seconds", DEFAULT_OUTBOX_RETENTION_SECONDS)
            if retention:
                pruner = OutboxPruner(pool, self.manifest.pack_id, float(retention),
                                      interval_seconds=float(self.opts.get("outbox_retention_interval_seconds", 60)))
                outer.start_soon(supervise, Supervision("outbox_retention"), lambda: pruner.run(stopping), stopping,
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
            pending = await self.relay.flush(timeout=10.0)
            self.state = "stopped"
            self.write_reports()
            self.events("pack_stopped", {"outbox_pending": pending})
            outer.cancel_scope.cancel()
        return 0

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
