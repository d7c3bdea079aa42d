"""The Decision Fabric on the embedded substrate (issue 12, Benchmark: DF's part).

Two sections, each on its own generated world and private streams:

- `throughput`: the projectors' state is built first (CSFB, OFP, IEG consume the whole world), then
  DF alone decides every AUTH_REQUEST of the traffic stream as a pack runs it (shard reader ->
  ActorRunner -> one Postgres transaction per batch with the outbox rows and checkpoint). Reported:
  decisions/s, traffic events/s, CPU per decision of this process, Postgres and kinesalite, and where
  DF's handler time goes (intake, dedupe probe, posture, each source's read, scoring, payloads and
  envelopes, the decision insert) beside the runner's commit (outbox COPY + checkpoint).
- `steady`: the world is put on the bus in event-time order at a steady rate (default 500 traffic
  events/s, context first at equal times), with CSFB, OFP, IEG and DF all running in this one process
  (pessimistic: in the platform the projectors run in another pack process). Reported: admit ->
  decision p50/p95/p99 (bus arrival time of the request to DF's commit), and how many requests waited.

    .venv/bin/python bench/bench_decision_lane.py [--flows 20000] [--rate 500] [--only throughput]
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime import CpuMeter, machine

from fraudrt.config import Settings, load_settings, project_root
from fraudrt.contracts import decode_envelope
from fraudrt.engine import GenerateRequest, generate_world
from fraudrt.runtime import LatencyHistogram
from fraudrt.runtime.bus import KinesisBus, PutEntry
from fraudrt.runtime.packs import configure_gc
from fraudrt.substrate import down, load_state, up

sys.path.insert(0, str(project_root()))
import fraudrt.rtdl.decision_fabric._actor as df_actor
import fraudrt.rtdl.decision_fabric._context as df_context
from fraudrt.rtdl.decision_fabric import DecisionFabric
from tests.support.df_lane import CONTEXT, TEST_DF_OPTIONS, lane, posture, replica, world_envelopes

RUNS = {"throughput": "platform_20260101T000000Z", "steady": "platform_20260101T000001Z"}


class Phases:
    """Wall time spent inside named functions (patched in place for the run)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        is_async = callable(original) and hasattr(original, "__code__") and original.__code__.co_flags & 0x80

        if is_async:
            async def timed(*a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                try:
                    return await original(*a, **k)
                finally:
                    self.seconds[label] += time.perf_counter() - t
                    self.calls[label] += 1
        else:
            def timed(*a: Any, **k: Any) -> Any:  # type: ignore[misc]
                t = time.perf_counter()
                try:
                    return original(*a, **k)
                finally:
                    self.seconds[label] += time.perf_counter() - t
                    self.calls[label] += 1

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()

    def report(self, per: int) -> dict[str, Any]:
        return {k: {"seconds": round(v, 3), "calls": self.calls[k], "us_per_decision": round(v / per * 1e6, 1)}
                for k, v in sorted(self.seconds.items(), key=lambda kv: -kv[1])}


async def _put(bus: KinesisBus, stream: str, datas: list[bytes]) -> None:
    for start in range(0, len(datas), 500):
        pending = [PutEntry(d, str(start + i)) for i, d in enumerate(datas[start:start + 500])]
        while pending:
            res = await bus.put_records(stream, pending)
            pending = [e for e, r in zip(pending, res, strict=True) if not r.ok]


async def _count(pool: Any, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args))


async def _until(probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value) or time.monotonic() > deadline:
            return value
        await anyio.sleep(0.05)


def _world(home: Path, flows: int, seed: int) -> Path:
    return Path(generate_world(GenerateRequest(out_dir=str(home / f"world{seed}"), seed=seed, n_flows=flows,
                                               modes=("fraud",))).engine_run_root)


async def bench_throughput(settings: Settings, meter: CpuMeter, flows: int, rate: float, home: Path) -> dict[str, Any]:
    run = RUNS["throughput"]
    world = _world(home, flows, 41)
    envs = world_envelopes(world, run)
    requests = sum(1 for d in envs["traffic_fraud"] if decode_envelope(d).payload["event_type"] == "AUTH_REQUEST")
    out: dict[str, Any] = {"flows": flows, "requests": requests, "traffic_events": len(envs["traffic_fraud"])}
    async with KinesisBus(settings.kinesis) as bus, replica(settings) as rep:
        await posture(rep, run, "NORMAL")
        for logical in (*CONTEXT, "traffic_fraud"):
            await _put(bus, rep.stream(logical), envs[logical])
        # The projectors' state first (DF not running).
        t0 = time.perf_counter()
        async with lane(rep, run, bus, df=_Idle(), projectors=True):
            await _until(lambda: _count(rep.pool, "SELECT count(*) FROM ieg_flows WHERE platform_run_id = $1 AND "
                                        "neighbourhood_2hop IS NOT NULL", run), lambda n: n >= flows, 1800)
            await _until(lambda: _count(rep.pool, "SELECT coalesce(max(flows_aggregated), 0) FROM ofp_progress "
                                        "WHERE platform_run_id = $1", run), lambda n: n >= flows, 1800)
            await _until(lambda: _count(rep.pool, "SELECT count(*) FROM csfb_flow_bindings WHERE platform_run_id = $1",
                                        run), lambda n: n >= flows, 1800)
        out["projectors_build_s"] = round(time.perf_counter() - t0, 1)
        phases = Phases()
        for owner, attr, label in ((df_actor.DecisionFabric, "_intake", "intake (decode, ids)"),
                                   (df_actor._store, "known", "dedupe probe (1 query)"),
                                   (df_actor.DecisionFabric, "_posture", "posture (1 query)"),
                                   (df_context, "resolve_flow_binding", "read CSFB bindings"),
                                   (df_context, "features_for", "read OFP vectors"),
                                   (df_context, "graph_features", "read IEG features"),
                                   (df_actor, "decide", "policy scoring"),
                                   (df_actor, "decision_envelopes", "intent + envelopes"),
                                   (df_actor, "df_decision_content_digest", "content digest"),
                                   (df_actor._store, "insert_decisions", "decision insert (1 query)"),
                                   (df_actor.DecisionFabric, "_handle", "DF handler total")):
            phases.wrap(owner, attr, label)
        df = DecisionFabric(TEST_DF_OPTIONS)
        try:
            c0, t0 = meter.snap(), time.perf_counter()
            async with lane(rep, run, bus, df=df, projectors=False) as pack:
                await _until(lambda: _count(rep.pool, "SELECT count(*) FROM df_decisions WHERE platform_run_id = $1",
                                            run), lambda n: n >= requests, 1800)
                wall = time.perf_counter() - t0
                cpu = CpuMeter.delta(c0, meter.snap())
                runner = pack.runners["decision_fabric"]
        finally:
            phases.restore()
        handler = phases.seconds["DF handler total"]
        out.update({
            "decide_wall_s": round(wall, 2), "decisions_per_s": round(requests / wall),
            "traffic_events_per_s": round(len(envs["traffic_fraud"]) / wall),
            "batches": runner.stats.batches, "mean_batch": round(runner.stats.seen / max(1, runner.stats.batches)),
            "cpu_s": cpu, "cpu_us_per_decision": {k: round(v / requests * 1e6) for k, v in cpu.items()},
            "handler_phases": phases.report(requests),
            "outside_handler_us_per_decision": round((wall - handler) / requests * 1e6, 1),
            "decided": df.metrics().get("decisions_total"), "actions": {k: v for k, v in df.metrics().items()
                                                                        if k.startswith("decisions.")},
        })
    return out


class _Idle(DecisionFabric):
    """A DF that reads nothing: the projectors' pack without DF, for building their state."""

    def subscriptions(self, settings: Settings) -> list[str]:
        return []


async def bench_steady(settings: Settings, meter: CpuMeter, flows: int, rate: float, home: Path) -> dict[str, Any]:
    run = RUNS["steady"]
    world = _world(home, flows, 43)
    envs = world_envelopes(world, run)
    # One event-time clock over the four streams, context before traffic at equal times (as WSP sends).
    merged: list[tuple[str, int, str, bytes]] = []
    for rank, logical in enumerate((*CONTEXT, "traffic_fraud")):
        merged += [(msgspec.json.decode(d)["ts_utc"], rank, logical, d) for d in envs[logical]]
    merged.sort(key=lambda m: (m[0], m[1]))
    requests = sum(1 for d in envs["traffic_fraud"] if decode_envelope(d).payload["event_type"] == "AUTH_REQUEST")
    out: dict[str, Any] = {"flows": flows, "requests": requests, "traffic_rate_per_s": rate}
    async with KinesisBus(settings.kinesis) as bus, replica(settings) as rep:
        await posture(rep, run, "NORMAL")
        df = DecisionFabric(TEST_DF_OPTIONS)
        tick = 0.02
        c0, t0 = meter.snap(), time.perf_counter()
        async with lane(rep, run, bus, df=df, projectors=True) as pack:
            i, traffic_sent, started = 0, 0, time.perf_counter()
            while i < len(merged):
                due = int((time.perf_counter() - started) * rate)
                batches: dict[str, list[bytes]] = defaultdict(list)
                while i < len(merged) and (merged[i][2] != "traffic_fraud" or traffic_sent < due):
                    batches[merged[i][2]].append(merged[i][3])
                    traffic_sent += merged[i][2] == "traffic_fraud"
                    i += 1
                for logical, datas in batches.items():
                    await _put(bus, rep.stream(logical), datas)
                await anyio.sleep(tick)
            put_s = time.perf_counter() - started
            await _until(lambda: _count(rep.pool, "SELECT count(*) FROM df_decisions WHERE platform_run_id = $1",
                                        run), lambda n: n >= requests, 600)
            wall = time.perf_counter() - t0
            cpu = CpuMeter.delta(c0, meter.snap())
            metrics = df.metrics()
            # Every actor's own bus arrival -> commit (the projectors' is the floor under DF's).
            per_actor = {name: r.stats.latency.summary() for name, r in pack.runners.items()}
        rows = await rep.pool.fetch("SELECT extract(epoch FROM decided_at - admitted_at) * 1000 AS ms, waited_ms "
                                    "FROM df_decisions WHERE platform_run_id = $1", run)
        built, waited, before = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
        for r in rows:
            built.observe(float(r["ms"]))
            waited.observe(float(r["waited_ms"]))
            before.observe(max(0.0, float(r["ms"]) - float(r["waited_ms"])))
        out.update({"put_s": round(put_s, 1), "achieved_traffic_rate": round(len(envs["traffic_fraud"]) / put_s),
                    "wall_s": round(wall, 1), "cpu_s": cpu,
                    "admit_to_commit_ms": df.latency.summary(),
                    "admit_to_decided_at_ms": built.summary(),
                    # Where it goes: bus arrival -> DF's handler picks the request up; then the wait
                    # for context (in the batch, or parked) until the decision is built.
                    "admit_to_df_handler_ms": before.summary(), "df_handler_to_decided_ms": waited.summary(),
                    "arrival_to_commit_ms_per_actor": per_actor,
                    "waited_durably": metrics.get("waited_total", 0),
                    "inline_waits": metrics.get("inline_waits_total", 0),
                    "context_missing": metrics.get("decisions_context.CONTEXT_MISSING", 0)})
    return out


SECTIONS = {"throughput": bench_throughput, "steady": bench_steady}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0, help="steady section: traffic events per second")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    parser.add_argument("--inline-ms", type=float, default=None, help="DF inline_wait_ms (default: DF's)")
    parser.add_argument("--recheck-ms", type=float, default=None, help="DF recheck_ms (default: DF's)")
    args = parser.parse_args()
    for key, value in (("inline_wait_ms", args.inline_ms), ("recheck_ms", args.recheck_ms)):
        if value is not None:
            TEST_DF_OPTIONS[key] = value
    configure_gc()
    home = Path(tempfile.mkdtemp(prefix="fraudrt-bench-"))
    os.chmod(home, 0o755)
    os.environ.update(FRAUDRT_HOME=str(home), FRAUDRT_RUNS_ROOT=str(home / "runs"))
    settings = load_settings("embedded")
    try:
        anyio.run(lambda: up(settings))
        settings = load_settings("embedded")
        state = load_state(settings)
        meter = CpuMeter({"kinesalite": state.services["kinesis"].process.pid,
                          "postgres": state.services["postgres"].process.pid})
        results: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg(),
                                   "df_options": dict(TEST_DF_OPTIONS)}
        for name in args.only or sorted(SECTIONS):
            results[name] = anyio.run(SECTIONS[name], settings, meter, args.flows, args.rate, home)
        results["load_after"] = os.getloadavg()
        print(json.dumps(results, indent=2))
    finally:
        down(load_settings("embedded"), purge=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
