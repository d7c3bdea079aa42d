"""The decision lane's Action Layer and Decision Log/Audit on the embedded substrate (issue 12, Benchmark).

Sections (each on its own private streams; the substrate is this script's own):

- `action_layer`: N decisions + N intents (what the Decision Fabric puts on fp.bus.rtdl.v1) are on
  the bus first; the Action Layer runs in this process as a pack runs it (shared reader -> runner
  -> Postgres) against the default simulated downstream (2 +- 2 ms per call, 2% transient and 0.1%
  permanent failures, 64 calls in flight) until every intent has its outcome. Reports intents ->
  outcomes per second, CPU per intent of this process, Postgres and kinesalite, and where the
  handler's wall time goes (downstream calls, each statement).
- `decision_log_audit`: N chains' decisions, intents and outcomes, interleaved as a live lane
  writes them (the outcome of chain i after the decision and intent of chain i + 50), are on the
  bus first; DLA runs until every chain is audited. Reports records and chains per second, CPU,
  and where the handler's time goes (segment PUT, each statement).
- `steady`: both actors and the outbox relay in one process, as the pack runs them, while a
  producer puts decision + intent pairs at a steady rate (500/s by default): decision -> outcome
  and admit -> audit p50/p95/p99 from the actors' own histograms (admitted_at = when the
  producer made the pair, so admit -> audit here is bus -> AL -> relay -> bus -> DLA, without DF).

    .venv/bin/python bench/bench_action_audit.py [--intents 20000] [--chains 20000] [--rate 500] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime import CpuMeter, machine

from fraudrt.config import Settings, load_settings, project_root
from fraudrt.runtime import ComponentContext
from fraudrt.runtime._outbox import OutboxRelay
from fraudrt.runtime._reader import Delivery, ShardReader
from fraudrt.runtime._runner import ActorRunner
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations, configure_gc
from fraudrt.substrate import bootstrap, down, up

sys.path.insert(0, str(project_root()))
from tests.support.harness import put
from tests.support.lane_events import chain, outcome

# One platform run per section: each section's counters and chains start from nothing.
RUNS = {"action_layer": "platform_20260101T000001Z", "decision_log_audit": "platform_20260101T000002Z",
        "steady": "platform_20260101T000003Z"}


class Timings:
    """Wall time spent inside wrapped coroutine functions (the handler's parts), by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        inner = getattr(owner, attr)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0
                self.calls[label] += 1

        setattr(owner, attr, timed)

    def report(self, total_s: float) -> dict[str, Any]:
        return {k: {"s": round(v, 2), "share": round(v / total_s, 3), "calls": self.calls[k]}
                for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])}


async def run_pack(settings: Settings, run: str, bus: KinesisBus, pool: Any, actors: list[tuple[str, Any]],
                   stream: str, done: Callable[[], bool], relay: OutboxRelay | None = None,
                   during: Callable[[], Awaitable[None]] | None = None) -> tuple[float, dict[str, ActorRunner]]:
    """Run `actors` on `stream` as a pack does (one shared reader, a runner each, optionally the relay)
    until `done()`; wall seconds and the runners."""
    stopping = anyio.Event()
    out_relay = relay
    runners: dict[str, ActorRunner] = {}
    sends = []
    for name, actor in actors:
        ctx = ComponentContext(settings=settings, platform_run_id=run, pool=pool, component=name,
                               pack_id=out_relay.owner if out_relay is not None else "bench",
                               stopping=stopping)
        send, receive = anyio.create_memory_object_stream[Delivery](max_buffer_size=4)
        runners[name] = ActorRunner(actor, ctx, receive, out_relay)
        await runners[name].load()
        sends.append(send)
    reader = ShardReader(bus, stream, (await bus.list_shards(stream))[0], sends, None, limit=5000)
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for runner in runners.values():
            tg.start_soon(runner.run)
        tg.start_soon(reader.run, stopping)
        if out_relay is not None:
            tg.start_soon(out_relay.run, stopping)
        if during is not None:
            tg.start_soon(during)
        while not done():  # noqa: ASYNC110 (a bench polls its actors' counters)
            await anyio.sleep(0.02)
        wall = time.perf_counter() - t0
        stopping.set()
        tg.cancel_scope.cancel()
    return wall, runners


async def _setup(settings: Settings, logical: str) -> tuple[Settings, str, Any]:
    prefix = f"bench{int(time.time() * 1000) % 10**9}-{logical}-"
    os.environ["FRAUDRT_STREAM_PREFIX"] = prefix
    scoped = load_settings("embedded")
    await bootstrap(scoped)
    pool = await asyncpg.create_pool(scoped.postgres.dsn, min_size=2, max_size=8, server_settings={"jit": "off"})
    async with pool.acquire() as conn:
        await apply_migrations(conn, "fraudrt.runtime", "fraudrt.rtdl.action_layer", "fraudrt.rtdl.decision_log_audit")
    return scoped, scoped.streams.name("rtdl"), pool


async def bench_action_layer(settings: Settings, meter: CpuMeter, args: argparse.Namespace) -> dict[str, Any]:
    from fraudrt.rtdl.action_layer import ActionLayer, _store

    n = args.intents
    run = RUNS["action_layer"]
    settings, stream, pool = await _setup(settings, "al")
    actions = ("APPROVE", "STEP_UP", "REVIEW", "DECLINE")
    async with KinesisBus(settings.kinesis) as bus:
        t0 = time.perf_counter()
        await put(bus, stream, [d for i in range(n) for d in (lambda c: (c.decision, c.intent))(
            chain(run, i, action=actions[i % 4]))])
        put_s = time.perf_counter() - t0
        actor = ActionLayer()
        timings = Timings()
        timings.wrap(actor.downstream, "execute", "downstream calls (overlapping, summed)")
        timings.wrap(actor, "_execute", "downstream round (wall)")
        for fn in ("known", "write_intents", "lock_pending", "update_intents", "insert_anomalies"):
            timings.wrap(_store, fn, f"sql.{fn}")
        timings.wrap(actor, "handle", "handle (all)")
        timings.wrap(actor, "on_timer", "on_timer (all)")
        c0 = meter.snap()
        wall, runners = await run_pack(settings, run, bus, pool, [("action_layer", actor)], stream,
                                       lambda: actor.counters["outcome_total"] >= n)
        cpu = CpuMeter.delta(c0, meter.snap())
    await pool.close()
    runner = runners["action_layer"]
    # The runner's own part of the commit (outbox COPY, timers, checkpoint) is what is left of its batches.
    return {
        "intents": n, "records_on_stream": 2 * n, "put_s": round(put_s, 1),
        "intents_per_s": round(n / wall), "wall_s": round(wall, 2), "cpu_s": cpu,
        "cpu_us_per_intent": {k: round(v / n * 1e6) for k, v in cpu.items()},
        "batches": runner.stats.batches, "timer_rounds": runner.stats.timers_fired,
        "counters": {k: actor.counters[k] for k in ("outcome_total", "executed_total", "failed_total",
                                                    "attempts_total", "retries_total")},
        "handler_time": timings.report(wall),
    }


async def bench_decision_log_audit(settings: Settings, meter: CpuMeter, args: argparse.Namespace) -> dict[str, Any]:
    from fraudrt.rtdl.decision_log_audit import DecisionLogAudit, _store

    n = args.chains
    run = RUNS["decision_log_audit"]
    settings, stream, pool = await _setup(settings, "dla")
    lag = 50
    chains = [chain(run, i) for i in range(n)]
    records: list[bytes] = []
    for i, c in enumerate(chains):
        records += [c.decision, c.intent]
        if i >= lag:
            records.append(outcome(chains[i - lag]))
    records += [outcome(c) for c in chains[-lag:]]
    async with KinesisBus(settings.kinesis) as bus:
        t0 = time.perf_counter()
        await put(bus, stream, records)
        put_s = time.perf_counter() - t0
        actor = DecisionLogAudit()
        timings = Timings()
        for fn in ("read_batch", "write_batch", "insert_anomalies"):
            timings.wrap(_store, fn, f"sql.{fn}")
        timings.wrap(actor, "_log", "segment PUTs (overlap the SQL)")
        timings.wrap(actor, "handle", "handle (all)")
        c0 = meter.snap()
        wall, runners = await run_pack(settings, run, bus, pool, [("decision_log_audit", actor)], stream,
                                       lambda: actor.counters["chains_resolved_total"] >= n)
        cpu = CpuMeter.delta(c0, meter.snap())
    await pool.close()
    runner = runners["decision_log_audit"]
    return {
        "chains": n, "records": len(records), "put_s": round(put_s, 1),
        "records_per_s": round(len(records) / wall), "chains_per_s": round(n / wall), "wall_s": round(wall, 2),
        "cpu_s": cpu, "cpu_us_per_record": {k: round(v / len(records) * 1e6) for k, v in cpu.items()},
        "batches": runner.stats.batches, "segments": actor.counters["segments_total"],
        "segment_mib": round(actor.counters["segment_bytes_total"] / 2**20, 1),
        "handler_time": timings.report(wall),
    }


async def bench_steady(settings: Settings, meter: CpuMeter, args: argparse.Namespace) -> dict[str, Any]:
    from fraudrt.rtdl.action_layer import ActionLayer
    from fraudrt.rtdl.decision_log_audit import DecisionLogAudit

    run = RUNS["steady"]
    settings, stream, pool = await _setup(settings, "steady")
    total = int(args.rate * args.seconds)
    al, dla = ActionLayer(), DecisionLogAudit()
    produced = 0

    async def produce() -> None:
        nonlocal produced
        async with KinesisBus(settings.kinesis) as bus:
            tick = 0.02  # a PutRecords every 20 ms, as IG's publisher batches under steady traffic
            start = time.perf_counter()
            while produced < total:
                due = min(total, int((time.perf_counter() - start) * args.rate))
                if due > produced:
                    batch = [chain(run, i) for i in range(produced, due)]
                    await put(bus, stream, [d for c in batch for d in (c.decision, c.intent)])
                    produced = due
                await anyio.sleep(tick)

    timings = Timings()
    timings.wrap(al, "handle", "action_layer.handle")
    timings.wrap(al, "on_timer", "action_layer.on_timer")
    timings.wrap(dla, "handle", "decision_log_audit.handle")
    timings.wrap(dla, "_log", "decision_log_audit.segments")
    timings.wrap(dla, "on_timer", "decision_log_audit.on_timer")
    from fraudrt.rtdl.action_layer import _store as al_store
    from fraudrt.rtdl.decision_log_audit import _store as dla_store

    for fn in ("known", "write_intents", "lock_pending", "update_intents"):
        timings.wrap(al_store, fn, f"action_layer.sql.{fn}")
    timings.wrap(al, "_execute", "action_layer.downstream round")
    for fn in ("read_batch", "lock_chains", "write_batch"):
        timings.wrap(dla_store, fn, f"decision_log_audit.sql.{fn}")
    c0 = meter.snap()
    async with KinesisBus(settings.kinesis) as bus:
        relay = OutboxRelay(pool, bus, owner=f"bench-{run}")
        timings.wrap(relay, "publish_once", "outbox relay round")
        wall, runners = await run_pack(settings, run, bus, pool, [("action_layer", al), ("decision_log_audit", dla)],
                                       stream, lambda: dla.counters["chains_resolved_total"] >= total, relay=relay,
                                       during=produce)
    cpu = CpuMeter.delta(c0, meter.snap())
    hops = await _hops(settings, pool, run)
    await pool.close()
    return {"hops_ms": hops, "rate_per_s": args.rate, "seconds": args.seconds, "chains": total,
            "wall_s": round(wall, 1),
            "cpu_s": cpu, "batches": {k: r.stats.batches for k, r in runners.items()},
            "relay": {"published": relay.stats.published, "failed_rounds": relay.stats.failed_rounds,
                      "retried_entries": relay.stats.retried_entries},
            "commit_ms": {k: r.stats.latency.summary() for k, r in runners.items()},
            "handler_time": timings.report(wall),
            "decision_to_outcome_ms": al.decision_to_outcome.summary(),
            "admit_to_audit_ms": dla.admit_to_audit.summary()}


def _pcts(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {f"p{q}": round(values[min(len(values) - 1, int(len(values) * q / 100))], 1) for q in (50, 95, 99)}


async def _hops(settings: Settings, pool: Any, run: str) -> dict[str, Any]:
    """Each chain's way through the lane, hop by hop, from the audit log's bus arrival times and the
    payloads' own timestamps: decided -> intent on the bus (the producer's put), intent on the bus ->
    outcome decided by AL (read + queue + AL's handler), outcome decided -> outcome on the bus (AL's
    commit + the relay), outcome on the bus -> audit record emitted (read + queue + DLA's handler)."""
    from fraudrt.contracts import parse_ts_utc
    from fraudrt.substrate import s3_client

    def ts(value: str) -> float:
        return parse_ts_utc(value).timestamp()

    intents: dict[str, tuple[float, float]] = {}
    outcomes: dict[str, tuple[float, float]] = {}
    async with s3_client(settings.s3) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=settings.buckets.platform, Prefix=f"{run}/decision_log_audit/"):
            for obj in page.get("Contents", []):
                body = await (await s3.get_object(Bucket=settings.buckets.platform, Key=obj["Key"]))["Body"].read()
                for line in body.splitlines():
                    doc = json.loads(line)
                    payload = doc["record"]["payload"]
                    if doc["event_type"] == "action_intent":
                        intents[doc["decision_id"]] = (ts(payload["decided_at_utc"]), doc["arrival_ts"])
                    elif doc["event_type"] == "action_outcome":
                        outcomes[doc["decision_id"]] = (ts(payload["completed_at_utc"]), doc["arrival_ts"])
    audited: dict[str, float] = {}
    for row in await pool.fetch("SELECT data FROM rt_outbox WHERE stream = $1", settings.streams.name("audit")):
        payload = json.loads(bytes(row["data"]))["payload"]
        audited[payload["decision_id"]] = ts(payload["audited_at_utc"])
    hops: dict[str, list[float]] = defaultdict(list)
    for d, (decided, intent_on_bus) in intents.items():
        if d not in outcomes or d not in audited:
            continue
        completed, outcome_on_bus = outcomes[d]
        hops["decided -> intent on bus"].append((intent_on_bus - decided) * 1000)
        hops["intent on bus -> AL outcome"].append((completed - intent_on_bus) * 1000)
        hops["AL outcome -> outcome on bus"].append((outcome_on_bus - completed) * 1000)
        hops["outcome on bus -> audit emitted"].append((audited[d] - outcome_on_bus) * 1000)
    return {name: _pcts(values) for name, values in hops.items()}


SECTIONS = {"action_layer": bench_action_layer, "decision_log_audit": bench_decision_log_audit,
            "steady": bench_steady}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--intents", type=int, default=20_000)
    parser.add_argument("--chains", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    args = parser.parse_args()
    configure_gc()
    home = Path(tempfile.mkdtemp(prefix="fraudrt-bench-"))
    os.chmod(home, 0o755)
    os.environ.update(FRAUDRT_HOME=str(home), FRAUDRT_RUNS_ROOT=str(home / "runs"))
    settings = load_settings("embedded")
    try:
        anyio.run(lambda: up(settings))
        settings = load_settings("embedded")
        anyio.run(bootstrap, settings)
        meter = CpuMeter.for_substrate(settings)
        results: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg()}
        for name in args.only or list(SECTIONS):
            results[name] = anyio.run(SECTIONS[name], settings, meter, args)
        results["load_after"] = os.getloadavg()
        print(json.dumps(results, indent=2))
    finally:
        down(load_settings("embedded"), purge=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
