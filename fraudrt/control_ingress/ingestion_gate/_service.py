"""`IngestionGate`: the IG service in a pack's event loop (or standalone via `fraudrt ig serve`).

Startup: take this process's instance lock (its liveness in Postgres, under an id unique to the
process), heal the claims of dead instances (a predecessor killed mid-push), and only then open
the HTTP site. Runs the aiohttp server until `ctx.stopping`, then drains in-flight requests.
Beside it: a probe loop (Postgres `SELECT 1` and the instance lock, S3 `HeadBucket`, Kinesis
`ListShards` of every routed stream) that keeps health current, a heal loop that re-publishes
admissions left PUBLISH_PENDING by a dead request, and a periodic `IG summary admit=… duplicate=…
quarantine=…` log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from contextlib import AsyncExitStack, suppress
from typing import Any, ClassVar

from aiohttp import web

import fraudrt
from fraudrt.runtime import BusError, ComponentContext, Service
from fraudrt.runtime.bus import KinesisBus
from fraudrt.substrate import s3_client

from ._auth import KeyRing, load_api_keys
from ._errors import REASON_BY_DEPENDENCY, DependencyDown, StillInFlight
from ._evidence import ObjectWriter
from ._gate import CRASH_HOOK_ENV, Gate, GateConfig
from ._http import IgHttp
from ._policy import Policy, load_policy
from ._publish import Publisher
from ._s3put import LeanS3Put
from ._store import AdmissionStore, InstanceLock

# The contract name (the pack routes it to logs/ig_service.log), whatever logger the context carries.
log = logging.getLogger("fraudrt.ingestion_gate")


def _option(ctx: ComponentContext, name: str, env: str, default: float) -> float:
    """A knob from the pack manifest's options, else the environment, else the default."""
    if name in ctx.options:
        return float(ctx.options[name])
    raw = os.environ.get(env)
    return float(raw) if raw else default


class IngestionGate(Service):
    name: ClassVar[str] = "ingestion_gate"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.control_ingress.ingestion_gate",)

    def __init__(self) -> None:
        self.gate: Gate | None = None
        self.policy: Policy | None = None
        self.port: int | None = None
        self.ready: asyncio.Event = asyncio.Event()
        # dependency -> (ok, last detail, monotonic time of the last check); None until first probe
        self._deps: dict[str, tuple[bool, str, float]] = {}
        self._publisher: Publisher | None = None
        self._writer: ObjectWriter | None = None
        self._http: IgHttp | None = None
        self._started = time.monotonic()

    # ------------------------------------------------------------------ health and metrics

    def _mark(self, dependency: str, ok: bool, detail: str = "") -> None:
        self._deps[dependency] = (ok, detail, time.monotonic())

    def on_dependency_down(self, exc: DependencyDown) -> None:
        self._mark(exc.dependency, False, exc.detail)

    def health(self) -> tuple[str, list[str]]:
        if self.gate is None:
            return "AMBER", ["STARTING"]
        reasons = []
        for dep in ("ops_db", "object_store", "bus"):
            state = self._deps.get(dep)
            if state is None:
                reasons.append(f"{REASON_BY_DEPENDENCY[dep].replace('UNHEALTHY', 'HEALTH_UNKNOWN')}")
            elif not state[0]:
                reasons.append(REASON_BY_DEPENDENCY[dep])
        if any(r.endswith("_UNHEALTHY") for r in reasons):
            return "RED", reasons
        if self._publisher is not None and self._publisher.stats.consecutive_failures >= 3:
            return "RED", [*reasons, "BUS_UNHEALTHY"]
        return ("AMBER", reasons) if reasons else ("GREEN", [])

    def health_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {dep: {"ok": ok, "detail": detail} for dep, (ok, detail, _) in self._deps.items()}
        if self.policy is not None:
            details["policy_rev"] = {"policy_id": self.policy.rev.policy_id, "revision": self.policy.rev.revision,
                                     "content_digest": self.policy.rev.content_digest}
        if self.port is not None:
            details["port"] = self.port
        if self._writer is not None:
            details["s3_put_client"] = "lean" if self._writer.lean is not None else "aiobotocore"
        return details

    def metrics(self) -> dict[str, Any]:
        if self.gate is None:
            return {}
        c = self.gate.counters
        out: dict[str, Any] = {
            "admit_total": c.admit_total, "duplicate_total": c.duplicate_total,
            "quarantine_total": c.quarantine_total, "healed_total": c.healed_total,
            "batches_total": c.batches_total, "in_flight_503_total": c.in_flight_503_total,
            "publish_retries_total": self._publisher.stats.retried_entries_total if self._publisher else 0,
            "publish_order_inversions_total": self._publisher.stats.order_inversions_total if self._publisher else 0,
            "publish_calls_total": self._publisher.stats.calls_total if self._publisher else 0,
            "receipt_objects_total": self._writer.puts_total if self._writer else 0,
        }
        if self._http is not None:
            out.update(self._http.limits.metrics())
        for reason, n in c.reasons.items():
            out[f"quarantine_reason_{reason}_total"] = n
        return out

    def health_body(self) -> dict[str, Any]:
        state, reasons = self.health()
        return {"state": state, "reasons": reasons, "component": self.name,
                "uptime_seconds": round(time.monotonic() - self._started, 1),
                "counters": self.metrics(), **self.health_details()}

    # ------------------------------------------------------------------ background loops

    async def _probe(self, store: AdmissionStore, lock: InstanceLock, writer: ObjectWriter, bus: KinesisBus,
                     streams: tuple[str, ...]) -> None:
        async def db() -> None:
            try:
                await store.ping()
                await lock.ensure()  # re-taken after a Postgres restart broke its session
                self._mark("ops_db", True)
            except DependencyDown as exc:
                self._mark("ops_db", False, exc.detail)

        async def s3() -> None:
            try:
                await writer.ping()
                self._mark("object_store", True)
            except DependencyDown as exc:
                self._mark("object_store", False, exc.detail)

        async def kinesis() -> None:
            try:
                for stream in streams:
                    await bus.list_shards(stream)
                self._mark("bus", True)
            except BusError as exc:
                self._mark("bus", False, f"{exc.code}: {exc}")
            except Exception as exc:
                self._mark("bus", False, f"{type(exc).__name__}: {exc}")

        await asyncio.gather(db(), s3(), kinesis())

    async def _probe_loop(self, ctx: ComponentContext, interval: float, *args: Any) -> None:
        while not ctx.stopping.is_set():
            await self._probe(*args)
            await self._sleep(ctx, interval)

    async def _instance(self, ctx: ComponentContext, lock: InstanceLock) -> str | None:
        """Take the instance lock, waiting for Postgres as long as it takes (no push is accepted
        meanwhile: the site opens later); None if stopped first."""
        delay = 0.5
        while not ctx.stopping.is_set():
            try:
                return await lock.acquire(f"ig@{socket.gethostname()}/{os.getpid()}")
            except DependencyDown as exc:
                self._mark("ops_db", False, exc.detail)
                log.warning("IG waiting for Postgres before it opens: %s", exc.detail)
            await self._sleep(ctx, delay)
            delay = min(5.0, delay * 2)
        return None

    @staticmethod
    async def _heal(gate: Gate, budget: float) -> None:
        """Heal orphaned claims until none is left or `budget` seconds are spent."""
        deadline = time.monotonic() + budget
        try:
            while await gate.heal_once() > 0 and time.monotonic() < deadline:
                pass
        except (DependencyDown, StillInFlight) as exc:
            log.warning("IG heal deferred: %s", exc)
        except Exception:
            log.exception("IG heal failed")

    async def _heal_loop(self, ctx: ComponentContext, gate: Gate, interval: float) -> None:
        while not ctx.stopping.is_set():
            await self._sleep(ctx, interval)
            await self._heal(gate, interval * 4)

    async def _summary_loop(self, ctx: ComponentContext, interval: float) -> None:
        while not ctx.stopping.is_set():
            await self._sleep(ctx, interval)
            self._log_summary(ctx)

    def _log_summary(self, ctx: ComponentContext) -> None:
        m = self.metrics()
        state, reasons = self.health()
        log.info("IG summary admit=%d duplicate=%d quarantine=%d publish_retries=%d healed=%d health=%s%s",
                        m.get("admit_total", 0), m.get("duplicate_total", 0), m.get("quarantine_total", 0),
                        m.get("publish_retries_total", 0), m.get("healed_total", 0), state,
                        f" reasons={','.join(reasons)}" if reasons else "")

    @staticmethod
    async def _sleep(ctx: ComponentContext, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(ctx.stopping.wait(), timeout=seconds)

    # ------------------------------------------------------------------ run

    async def run(self, ctx: ComponentContext) -> None:
        settings = ctx.settings
        self.policy = policy = load_policy(settings)
        keys = KeyRing(load_api_keys(settings))
        heal_lease = _option(ctx, "heal_lease_seconds", "IG_HEAL_LEASE_SECONDS", 60.0)
        concurrency = int(_option(ctx, "s3_concurrency", "IG_S3_CONCURRENCY", 64))
        crash_hook = os.environ.get(CRASH_HOOK_ENV) or None
        port = int(ctx.options.get("port", settings.ig.port))
        host = str(ctx.options.get("host", settings.ig.host))
        db_timeout = _option(ctx, "db_timeout_seconds", "IG_DB_TIMEOUT_SECONDS", 5.0)
        async with AsyncExitStack() as stack:
            bus = await stack.enter_async_context(KinesisBus(settings.kinesis))
            s3 = await stack.enter_async_context(s3_client(settings.s3, max_pool_connections=concurrency))
            store = AdmissionStore(ctx.pool, timeout=db_timeout)
            # Unique per process (two IGs on one host, a restart on the port its predecessor still
            # drains): the claims a process makes are healed at once when its lock is gone, and only then.
            lock = InstanceLock(ctx.pool, timeout=db_timeout)
            stack.push_async_callback(lock.release)
            instance_id = await self._instance(ctx, lock)
            if instance_id is None:
                return
            lean = None
            if LeanS3Put.supported(settings.s3) and os.environ.get("IG_S3_CLIENT", "lean") == "lean":
                lean = await stack.enter_async_context(LeanS3Put(settings.s3, concurrency=concurrency))
            self._writer = writer = ObjectWriter(s3, settings.buckets.platform, concurrency=concurrency, lean=lean)
            self._publisher = publisher = Publisher(
                bus, budget_seconds=_option(ctx, "publish_budget_seconds", "IG_PUBLISH_BUDGET_SECONDS", 10.0),
                lanes=int(ctx.options.get("publish_lanes", settings.ig.publish_lanes)))
            config = GateConfig(
                bucket=settings.buckets.platform, fallback_run=ctx.platform_run_id,
                instance_id=instance_id, environment=settings.profile,
                service_release_id=os.environ.get("SERVICE_RELEASE_ID", f"fraudrt-{fraudrt.__version__}"),
                receipts_layout=settings.ig.receipts_layout, heal_lease_seconds=heal_lease, crash_hook=crash_hook)
            self.gate = gate = Gate(policy, store, publisher, writer, config)
            self._http = http = IgHttp(
                gate, keys, self.health_body, max_body_bytes=settings.ig.max_body_bytes,
                max_batch_events=settings.ig.max_batch_events, on_dependency_down=self.on_dependency_down,
                max_pushes_in_flight=int(ctx.options.get("max_pushes_in_flight", settings.ig.max_pushes_in_flight)),
                max_bytes_in_flight=int(ctx.options.get("max_bytes_in_flight", settings.ig.max_bytes_in_flight)))
            runner = web.AppRunner(http.app(), access_log=None,
                                   shutdown_timeout=_option(ctx, "drain_seconds", "IG_DRAIN_SECONDS", 15.0))
            await runner.setup()
            heal_interval = _option(ctx, "heal_interval_seconds", "IG_HEAL_INTERVAL_SECONDS",
                                    max(0.2, min(5.0, heal_lease / 2)))
            try:
                await self._probe(store, lock, writer, bus, policy.streams)
                # Before the site accepts a push: what a dead predecessor left pending is published
                # now, not raced by the producer's retries of the same events.
                await self._heal(gate, _option(ctx, "startup_heal_seconds", "IG_STARTUP_HEAL_SECONDS", 30.0))
                site = web.TCPSite(runner, host, port)
                await site.start()
                server = getattr(site, "_server", None)
                sockets = getattr(server, "sockets", None) or []
                self.port = sockets[0].getsockname()[1] if sockets else port
                log.info("IG %s listening on %s:%d (policy %s %s, receipts %s, %d stream(s))", instance_id, host,
                         self.port, policy.rev.revision, policy.rev.content_digest[:12], settings.ig.receipts_layout,
                         len(policy.streams))
                self.ready.set()
                tasks = [
                    asyncio.create_task(self._probe_loop(
                        ctx, _option(ctx, "probe_interval_seconds", "IG_PROBE_INTERVAL_SECONDS", 5.0),
                        store, lock, writer, bus, policy.streams)),
                    asyncio.create_task(self._heal_loop(ctx, gate, heal_interval)),
                    asyncio.create_task(self._summary_loop(
                        ctx, _option(ctx, "summary_interval_seconds", "IG_SUMMARY_INTERVAL_SECONDS", 30.0))),
                ]
                try:
                    await ctx.stopping.wait()
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                log.info("IG draining")
                # Stops accepting, lets in-flight pushes finish (up to shutdown_timeout), then closes.
                await runner.cleanup()
                self._log_summary(ctx)
                log.info("IG stopped")
