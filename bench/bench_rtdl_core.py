"""RTDL core projectors on the embedded substrate, each alone, beside the substrate's own ceilings.

Each section generates a world, puts the streams its projector reads on the bus (the "context
already on the bus" of issue 11), then runs the projector in this process exactly as a pack runs
it (shared shard reader -> runner -> one transaction per batch) and reports records/s, CPU per
record of this process, Postgres and kinesalite, where the time goes, and its reader's latency
for a batch of 100 flows.

    .venv/bin/python bench/bench_rtdl_core.py [--flows 100000] [--only identity_entity_graph]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_runtime import CpuMeter, machine  # noqa: E402

from fraudrt.config import Settings, load_settings  # noqa: E402
from fraudrt.runtime import (  # noqa: E402
    ComponentContext,
    KinesisBus,
    PutEntry,
    apply_migrations,
    configure_gc,
    freeze_heap,
)
from fraudrt.runtime._reader import Delivery, ShardReader  # noqa: E402
from fraudrt.runtime._runner import ActorRunner  # noqa: E402
from fraudrt.substrate import down, ensure_stream, kinesis_client, load_state, up, wait_active  # noqa: E402
from tests.support.world_bus import WorldPins, generate, output_rows  # noqa: E402

RUN = "platform_20260101T000000Z"


async def put_all(bus: KinesisBus, stream: str, datas: list[bytes], keys: list[str]) -> None:
    for start in range(0, len(datas), 500):
        pending = [PutEntry(d, k) for d, k in zip(datas[start:start + 500], keys[start:start + 500], strict=True)]
        while pending:
            results = await bus.put_records(stream, pending)
            pending = [e for e, r in zip(pending, results, strict=True) if not r.ok]


def percentiles(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(qs[49] * 1e3, 3), "p95_ms": round(qs[94] * 1e3, 3), "p99_ms": round(qs[98] * 1e3, 3),
            "max_ms": round(max(samples) * 1e3, 3)}


# ------------------------------------------------------------------------------ identity_entity_graph


def ieg_cpu_breakdown(records: list[Any]) -> dict[str, float]:
    """µs per anchor of each in-process step, with no I/O (the actor's handle, piece by piece)."""
    from fraudrt.rtdl.identity_entity_graph import IdentityEntityGraph
    from fraudrt.rtdl.identity_entity_graph._graph import Staged
    from fraudrt.rtdl.identity_entity_graph._store import FlowRows
    from fraudrt.runtime import content_hash, pack_columns

    actor = IdentityEntityGraph()
    n = len(records)
    out: dict[str, float] = {}
    t0 = time.process_time()
    parsed = [actor._observe(r) for r in records]
    out["decode_and_validate"] = (time.process_time() - t0) / n * 1e6
    t0 = time.process_time()
    hashes = [content_hash(r) for r in records]
    pack_columns([[r.event_id for r in records], hashes])
    out["inbox_hash_and_pack"] = (time.process_time() - t0) / n * 1e6
    obs = [p[0] for p in parsed if not isinstance(p, str)]
    graph = actor.graph
    stage_s = features_s = pack_s = 0.0
    for start in range(0, len(obs), 2000):
        chunk = obs[start:start + 2000]
        st = Staged()
        t0 = time.process_time()
        for o in chunk:
            graph.stage(st, o)
        t1 = time.process_time()
        feats = [graph.features(st, o) for o in chunk]
        t2 = time.process_time()
        rows = FlowRows()
        for o, f in zip(chunk, feats, strict=True):
            rows.add("e" * 64, "2026-01-01T00:00:00.000000Z", o, f)
        pack_columns(rows.columns)
        t3 = time.process_time()
        graph.commit(st)
        stage_s += t1 - t0
        features_s += t2 - t1
        pack_s += t3 - t2
        commit_s = time.process_time() - t3
        out["commit_to_memory"] = out.get("commit_to_memory", 0.0) + commit_s / n * 1e6
    out["stage"] = stage_s / n * 1e6
    out["features"] = features_s / n * 1e6
    out["sql_columns"] = pack_s / n * 1e6
    return {k: round(v, 1) for k, v in out.items()}


async def bench_identity_entity_graph(settings: Settings, meter: CpuMeter, flows: int, work: Path) -> dict[str, Any]:
    from fraudrt.rtdl._inputs import flow_anchor_stream
    from fraudrt.rtdl.identity_entity_graph import IdentityEntityGraph, graph_features
    from fraudrt.runtime._reader import to_inbound

    world = generate(work / "world", n_flows=flows, seed=7, fraud_rate=0.02)
    anchors = output_rows(world, "s3_flow_anchor_with_fraud_6B")
    datas = WorldPins(world, RUN).envelopes("s3_flow_anchor_with_fraud_6B", anchors)
    keys = [str(f) for f in anchors["flow_id"]]
    n = len(datas)
    del anchors
    freeze_heap()  # as a pack does once startup is over: the world's frames are not the actor's heap
    stream = flow_anchor_stream(settings)
    async with kinesis_client(settings.kinesis) as k:
        await ensure_stream(k, stream, 1)
        await wait_active(k, [stream])
    results: dict[str, Any] = {"flows": n, "traffic_events": 2 * n}
    async with KinesisBus(settings.kinesis) as bus:
        shard = (await bus.list_shards(stream))[0]
        c0, t0 = meter.snap(), time.perf_counter()
        await put_all(bus, stream, datas, keys)
        wall = time.perf_counter() - t0
        results["raw_put"] = {"rec_per_s": round(n / wall), "cpu_s": CpuMeter.delta(c0, meter.snap())}
        c0, t0 = meter.snap(), time.perf_counter()
        it, got, sample = await bus.get_shard_iterator(stream, shard), 0, []
        while got < n:
            r = await bus.get_records(stream, shard, it, 10000)
            got += len(r.records)
            if len(sample) < 20000:
                sample.extend(to_inbound(x) for x in r.records[:20000 - len(sample)])
            it = r.next_iterator or it
        wall = time.perf_counter() - t0
        results["raw_get"] = {"rec_per_s": round(n / wall), "cpu_s": CpuMeter.delta(c0, meter.snap())}
        results["cpu_us_per_anchor_in_process"] = ieg_cpu_breakdown(sample)

        pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=2, max_size=8)
        async with pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.runtime", "fraudrt.rtdl.identity_entity_graph")
        stopping = anyio.Event()
        ctx = ComponentContext(settings=settings, platform_run_id=RUN, pack_id="bench", pool=pool, stopping=stopping)
        send, receive = anyio.create_memory_object_stream[Delivery](max_buffer_size=4)
        actor = IdentityEntityGraph()
        runner = ActorRunner(actor, ctx, receive, relay=None)
        await runner.load()
        reader = ShardReader(bus, stream, shard, [send], None, limit=5000)
        c0, t0 = meter.snap(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            tg.start_soon(reader.run, stopping)
            while actor.flows_applied < n:  # noqa: ASYNC110 (a bench polls its own counter)
                await anyio.sleep(0.01)
            wall = time.perf_counter() - t0
            cpu = CpuMeter.delta(c0, meter.snap())
            stopping.set()
            tg.cancel_scope.cancel()
        results["actor"] = {
            "anchors_per_s": round(n / wall), "traffic_events_per_s_equivalent": round(2 * n / wall),
            "wall_s": round(wall, 2), "batches": runner.stats.batches, "cpu_s": cpu,
            "cpu_us_per_anchor": {k: round(v / n * 1e6, 1) for k, v in cpu.items()},
            "cpu_us_per_traffic_event": {k: round(v / (2 * n) * 1e6, 1) for k, v in cpu.items()},
            "metrics": {k: v for k, v in actor.metrics().items() if k.startswith(("edges", "entities", "flows"))},
        }
        # The typed reader: a batch of 100 flows per call, as DF asks.
        flow_ids = [int(k) for k in keys]
        rnd = random.Random(1)
        for _ in range(50):  # warm the pool's prepared statement
            await graph_features(pool, RUN, rnd.sample(flow_ids, 100))
        samples = []
        for _ in range(2000):
            batch = rnd.sample(flow_ids, 100)
            t = time.perf_counter()
            got_rows = await graph_features(pool, RUN, batch)
            samples.append(time.perf_counter() - t)
            assert all(g.complete for g in got_rows)
        results["reader_batch_100"] = percentiles(samples)
        await pool.close()
    return results


SECTIONS = {"identity_entity_graph": bench_identity_entity_graph}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=100_000, help="flows (each has two traffic events)")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    args = parser.parse_args()
    configure_gc()  # the pack's collector policy, so the actor's costs are the pack's
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
        results: dict[str, Any] = {"machine": machine(), "load_avg_at_start": os.getloadavg()}
        for name, section in SECTIONS.items():
            if args.only and name not in args.only:
                continue
            results[name] = anyio.run(section, settings, meter, args.flows, home / name)
        results["load_avg_at_end"] = os.getloadavg()
        print(json.dumps(results, indent=2))
    finally:
        down(load_settings("embedded"), purge=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
