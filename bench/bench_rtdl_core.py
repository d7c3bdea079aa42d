"""RTDL core projectors on the embedded substrate, one section per component, each actor alone.

Context Store / Flow Binding (`bench_csfb`): a generated world's context (arrival events, arrival
entities, flow anchors: three records per flow) is put on the bus first; then the CSFB actor runs
in this process exactly as a pack runs it (one shard reader per stream, one bounded queue, the
runner committing to Postgres) until its checkpoints reach the end of all three streams. Reported:
records/s and flows/s, the equivalent traffic events/s (two per flow), CPU per traffic event of
this process, Postgres and kinesalite, the raw GetRecords ceiling of the same streams measured in
the same run, and the typed reader's latency for batches of 100 flows.

    .venv/bin/python bench/bench_rtdl_core.py [--flows 100000] [--only csfb]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from bench_runtime import CpuMeter, machine  # type: ignore[import-not-found]

from fraudrt.config import Settings, load_settings, project_root
from fraudrt.runtime import ComponentContext, KinesisBus, apply_migrations, seq_key
from fraudrt.runtime._reader import Delivery, ShardReader
from fraudrt.runtime._runner import ActorRunner
from fraudrt.substrate import bootstrap, down, up

sys.path.insert(0, str(project_root()))
from tests.support.harness import put
from tests.support.rtdl_world import envelopes, make_world

RUN = "platform_20260101T000000Z"
CONTEXT = {"arrival_events": "arrival_events_5B", "arrival_entities": "s1_arrival_entities_6B",
           "flow_anchor_fraud": "s3_flow_anchor_with_fraud_6B"}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _raw_read(bus: KinesisBus, streams: list[str], meter: CpuMeter, total: int) -> dict[str, Any]:
    """GetRecords of every record of `streams` (10,000 per call): the read ceiling of this substrate."""
    c0, t0 = meter.snap(), time.perf_counter()
    got = 0
    for stream in streams:
        for shard in await bus.list_shards(stream):
            it: str | None = await bus.get_shard_iterator(stream, shard)
            while it is not None:
                r = await bus.get_records(stream, shard, it, 10_000)
                got += len(r.records)
                if not r.records and r.millis_behind == 0:
                    break
                it = r.next_iterator
    wall = time.perf_counter() - t0
    assert got == total, (got, total)
    return {"rec_per_s": round(total / wall), "wall_s": round(wall, 2), "cpu_s": CpuMeter.delta(c0, meter.snap())}


async def bench_csfb(settings: Settings, meter: CpuMeter, world: Path, flows: int, reader_calls: int) -> dict[str, Any]:
    from fraudrt.rtdl.context_store_flow_binding import (
        ContextStoreFlowBinding,
        join_readiness,
        resolve_flow_binding,
    )

    out: dict[str, Any] = {"flows": flows}
    total = 0
    flow_ids: list[int] = []
    last: dict[tuple[str, str], str] = {}
    async with KinesisBus(settings.kinesis) as bus:
        t0 = time.perf_counter()
        for logical, output in CONTEXT.items():  # one output at a time: a world's envelopes are large
            items = envelopes(world, output, RUN)
            total += len(items)
            if logical == "flow_anchor_fraud":
                flow_ids = [json.loads(d)["payload"]["flow_id"] for d in items]
            for ack in await put(bus, settings.streams.name(logical), items):
                key = (ack.stream, ack.shard_id)
                if key not in last or seq_key(ack.sequence_number) > seq_key(last[key]):
                    last[key] = ack.sequence_number
            del items
        out["put_context"] = {"records": total, "wall_s": round(time.perf_counter() - t0, 1)}
        streams = [settings.streams.name(s) for s in CONTEXT]
        out["raw_get_ceiling"] = await _raw_read(bus, streams, meter, total)

        pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=2, max_size=8)
        async with pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.runtime", "fraudrt.rtdl.context_store_flow_binding")
        stopping = anyio.Event()
        ctx = ComponentContext(settings=settings, platform_run_id=RUN, pack_id="bench", pool=pool, stopping=stopping)
        actor = ContextStoreFlowBinding()
        send, receive = anyio.create_memory_object_stream[Delivery](max_buffer_size=4)
        runner = ActorRunner(actor, ctx, receive, relay=None)
        await runner.load()
        readers = [ShardReader(bus, stream, shard, [send], None, limit=5000)
                   for stream in streams for shard in await bus.list_shards(stream)]
        c0, t0 = meter.snap(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            for reader in readers:
                tg.start_soon(reader.run, stopping)
            # Polled: the runner has no event to wait on, and 10 ms is far below the phase's length.
            while not all(k in runner.checkpoints and seq_key(runner.checkpoints[k]) >= seq_key(s)  # noqa: ASYNC110
                          for k, s in last.items()):
                await anyio.sleep(0.01)
            wall = time.perf_counter() - t0
            c1 = meter.snap()
            stopping.set()
            tg.cancel_scope.cancel()
        m = actor.metrics()
        assert m["bindings_total"] == flows and m["join_misses"] == 0, m
        cpu = CpuMeter.delta(c0, c1)
        traffic = 2 * flows
        out["actor"] = {
            "wall_s": round(wall, 2), "context_rec_per_s": round(total / wall), "flows_per_s": round(flows / wall),
            "traffic_events_per_s_equiv": round(traffic / wall), "batches": runner.stats.batches,
            "cpu_s": cpu, "cpu_us_per_traffic_event": {k: round(v / traffic * 1e6, 1) for k, v in cpu.items()},
            "join_hits": m["join_hits"], "late_joins": m["late_joins"],
        }

        # The typed reader: batches of 100 flows, as the Decision Fabric asks.
        # Wall time per call, and this process's CPU per call (decoding rows into structs): on a
        # shared 2-core box the wall tail is mostly waiting for a core.
        lat: dict[str, list[float]] = {"resolve_flow_binding": [], "join_readiness": []}
        cpu_ms: dict[str, list[float]] = {name: [] for name in lat}
        rng = random.Random(7)
        async with pool.acquire() as conn:
            for i in range(reader_calls + 50):
                batch = rng.sample(flow_ids, 100)
                for name, fn in (("resolve_flow_binding", resolve_flow_binding), ("join_readiness", join_readiness)):
                    t, c = time.perf_counter(), time.process_time()
                    got = await fn(conn, RUN, batch)
                    if i >= 50:  # the first calls warm the plan cache and the buffer pool
                        lat[name].append((time.perf_counter() - t) * 1000)
                        cpu_ms[name].append((time.process_time() - c) * 1000)
                    assert len(got) == 100
        out["reader_batch_of_100_ms"] = {
            name: {"p50": round(statistics.median(v), 3), "p95": round(_pct(v, 0.95), 3),
                   "p99": round(_pct(v, 0.99), 3), "max": round(max(v), 3), "calls": len(v),
                   "client_cpu_p50": round(statistics.median(cpu_ms[name]), 3)}
            for name, v in lat.items()}
        await pool.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--reader-calls", type=int, default=2000)
    parser.add_argument("--only", default="", help="comma-separated sections (csfb); default all")
    args = parser.parse_args()
    only = {s for s in args.only.split(",") if s}
    home = Path(tempfile.mkdtemp(prefix="fraudrt-bench-"))
    os.chmod(home, 0o755)
    os.environ.update(FRAUDRT_HOME=str(home), FRAUDRT_RUNS_ROOT=str(home / "runs"))
    settings = load_settings("embedded")
    try:
        anyio.run(lambda: up(settings))
        settings = load_settings("embedded")
        anyio.run(lambda: bootstrap(settings))
        meter = CpuMeter.for_substrate(settings)
        meter.pids.pop("seaweedfs", None)  # no S3 in these sections
        t0 = time.perf_counter()
        world = make_world(home / "world", n_flows=args.flows, seed=5, n_parts=4)
        results: dict[str, Any] = {"machine": machine(), "world_s": round(time.perf_counter() - t0, 1)}
        if not only or "csfb" in only:
            results["csfb"] = anyio.run(bench_csfb, settings, meter, world, args.flows, args.reader_calls)
        print(json.dumps(results, indent=2))
    finally:
        down(load_settings("embedded"), purge=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
