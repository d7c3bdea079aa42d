"""RTDL core projectors on the embedded substrate, one actor at a time (issue 11, Benchmark).

Each section puts a generated world's traffic and context on private streams first (the substrate
ceiling for the write is reported beside it), then runs one projector in this process exactly as a
pack runs it (shared shard readers -> ActorRunner -> Postgres), and reports sustained traffic
events/s and CPU per traffic event of this process, Postgres and kinesalite; then its typed
reader's latency for batches of 100 flows.

    .venv/bin/python bench/bench_rtdl_core.py [--flows 100000] [--days 3] [--only online_feature_plane]

Context Store / Flow Binding: the world's context (arrival events, arrival entities, flow anchors:
three records per flow) goes on the bus first; CSFB runs until its checkpoints reach the end of all
three streams. Reported beside it: the raw GetRecords ceiling of the same streams, the equivalent
traffic events/s (two per flow), and `resolve_flow_binding` / `join_readiness` latency (wall, and
this process's CPU per call).

The process runs with the pack's collector policy (`configure_gc`), so the collector costs what
it costs in a pack.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime import CpuMeter, machine

from fraudrt.config import Settings, load_settings, project_root
from fraudrt.engine import GenerateRequest, generate_world, output_paths, read_run_receipt
from fraudrt.runtime import ComponentContext
from fraudrt.runtime._reader import Delivery, ShardReader
from fraudrt.runtime._runner import ActorRunner
from fraudrt.runtime.bus import KinesisBus, PutEntry, seq_key
from fraudrt.runtime.packs import apply_migrations, configure_gc, freeze_heap
from fraudrt.substrate import down, ensure_stream, kinesis_client, load_state, up, wait_active

sys.path.insert(0, str(project_root()))
from tests.support.harness import put
from tests.support.rtdl_world import envelopes, make_world

RUN = "platform_20260101T000000Z"
CONTEXT = {"arrival_events": "arrival_events_5B", "arrival_entities": "s1_arrival_entities_6B",
           "flow_anchor_fraud": "s3_flow_anchor_with_fraud_6B"}
_enc = msgspec.json.Encoder()


def world_envelopes(world: Path, output_id: str) -> list[bytes]:
    """One output's rows as envelopes, in event-time order (as WSP and IG put them on the bus)."""
    receipt = read_run_receipt(world)
    df = pl.concat([pl.read_parquet(p) for p in output_paths(world, output_id, "baseline_v1", receipt=receipt)])
    out = []
    for row in df.sort("ts_utc", "flow_id").iter_rows(named=True):
        eid = hashlib.sha256(f"{output_id}|{row['flow_id']}|{row.get('event_seq', '')}".encode()).hexdigest()
        out.append(_enc.encode({"event_id": eid, "event_type": output_id, "schema_version": "v1",
                                "ts_utc": row["ts_utc"], "platform_run_id": RUN, "scenario_run_id": "0" * 32,
                                "manifest_fingerprint": row["manifest_fingerprint"],
                                "parameter_hash": row["parameter_hash"], "seed": row["seed"],
                                "scenario_id": row["scenario_id"], "producer": "bench", "payload": row}))
    return out


async def put_all(bus: KinesisBus, stream: str, datas: list[bytes]) -> None:
    for start in range(0, len(datas), 500):
        pending = [PutEntry(d, str(start + i)) for i, d in enumerate(datas[start:start + 500])]
        while pending:
            res = await bus.put_records(stream, pending)
            pending = [e for e, r in zip(pending, res, strict=True) if not r.ok]


async def run_alone(settings: Settings, meter: CpuMeter, bus: KinesisBus, pool: Any, actor: Any,
                    streams: list[str], done: Callable[[], bool]) -> tuple[float, dict[str, float], ActorRunner]:
    """Run one actor as a pack runs it (a reader per stream's shard -> its runner) until `done()`:
    wall seconds, CPU seconds of this process and the substrate, and the runner."""
    stopping = anyio.Event()
    ctx = ComponentContext(settings=settings, platform_run_id=RUN, pack_id="bench", pool=pool, stopping=stopping)
    send, receive = anyio.create_memory_object_stream[Delivery](max_buffer_size=4)
    runner = ActorRunner(actor, ctx, receive, None)
    await runner.load()
    readers = [ShardReader(bus, s, (await bus.list_shards(s))[0], [send], None, limit=5000) for s in streams]
    c0, t0 = meter.snap(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        for r in readers:
            tg.start_soon(r.run, stopping)
        while not done():  # noqa: ASYNC110 (a bench polls its actor's counter)
            await anyio.sleep(0.02)
        wall = time.perf_counter() - t0
        cpu = CpuMeter.delta(c0, meter.snap())
        stopping.set()
        tg.cancel_scope.cancel()
    return wall, cpu, runner


async def reader_latency(ask: Callable[[list[int]], Awaitable[bool]], ids: list[int], calls: int) -> dict[str, Any]:
    """Milliseconds per call of `ask` for batches of 100 random flows (`ask` says the answers were complete);
    100 calls first warm the statement cache."""
    rng = random.Random(1)
    lat = []
    for i in range(calls + 100):
        batch = rng.sample(ids, 100)
        t = time.perf_counter()
        complete = await ask(batch)
        if i >= 100:
            lat.append((time.perf_counter() - t) * 1000)
        assert complete
    lat.sort()
    return {"p50": round(statistics.median(lat), 2), "p95": round(lat[int(len(lat) * 0.95)], 2),
            "p99": round(lat[int(len(lat) * 0.99)], 2), "max": round(lat[-1], 2), "calls": len(lat)}


async def bench_online_feature_plane(settings: Settings, meter: CpuMeter, flows: int, days: float,
                                     work: Path) -> dict[str, Any]:
    from fraudrt.rtdl.online_feature_plane import OnlineFeaturePlane, features_for

    summary = generate_world(GenerateRequest(out_dir=str(work / "world"), seed=3, n_flows=flows,
                                             duration_s=days * 86400, fraud_rate=0.02))
    world = Path(summary.engine_run_root)
    traffic = world_envelopes(world, "s3_event_stream_with_fraud_6B")
    anchors = world_envelopes(world, "s3_flow_anchor_with_fraud_6B")
    traffic_stream, anchor_stream = settings.streams.name("traffic_fraud"), settings.streams.name("flow_anchor_fraud")
    async with kinesis_client(settings.kinesis) as k:
        for s in (traffic_stream, anchor_stream):
            await ensure_stream(k, s, 1)
        await wait_active(k, [traffic_stream, anchor_stream])
    out: dict[str, Any] = {"flows": flows, "traffic_events": len(traffic), "anchors": len(anchors),
                           "event_time_days": days}
    async with KinesisBus(settings.kinesis) as bus:
        c0, t0 = meter.snap(), time.perf_counter()
        await put_all(bus, traffic_stream, traffic)
        await put_all(bus, anchor_stream, anchors)
        wall = time.perf_counter() - t0
        out["put_ceiling"] = {"records_per_s": round((len(traffic) + len(anchors)) / wall),
                              "cpu_s": CpuMeter.delta(c0, meter.snap())}

        pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=2, max_size=8)
        async with pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.runtime", "fraudrt.rtdl.online_feature_plane")
        ofp = OnlineFeaturePlane()
        wall, cpu, runner = await run_alone(settings, meter, bus, pool, ofp, [traffic_stream, anchor_stream],
                                            lambda: ofp.flows_aggregated >= flows)
        out["online_feature_plane"] = {
            "traffic_events_per_s": round(len(traffic) / wall), "wall_s": round(wall, 2),
            "batches": runner.stats.batches, "cpu_s": cpu,
            "cpu_us_per_traffic_event": {k: round(v / len(traffic) * 1e6, 1) for k, v in cpu.items()},
            "keys_cached": ofp.metrics()["keys_cached"],
        }

        # The typed reader: batches of 100 random flows, one statement each.
        ids = [int(x) for x in pl.read_parquet(output_paths(world, "s3_flow_anchor_with_fraud_6B", "baseline_v1",
                                                            receipt=read_run_receipt(world))[0],
                                               columns=["flow_id"])["flow_id"]]
        async with pool.acquire() as conn:

            async def ask(batch: list[int]) -> bool:
                return all(f.complete for f in (await features_for(conn, RUN, batch)).flows)

            out["reader_100_flows_ms"] = await reader_latency(ask, ids, 500)
        await pool.close()
    return out


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


async def bench_context_store_flow_binding(settings: Settings, meter: CpuMeter, flows: int, days: float,
                                           work: Path, reader_calls: int = 2000) -> dict[str, Any]:
    from fraudrt.rtdl.context_store_flow_binding import (
        ContextStoreFlowBinding,
        join_readiness,
        resolve_flow_binding,
    )

    world = make_world(work / "csfb_world", n_flows=flows, seed=5, duration_s=days * 86400)
    streams = [settings.streams.name(s) for s in CONTEXT]
    async with kinesis_client(settings.kinesis) as k:
        for s in streams:
            await ensure_stream(k, s, 1)
        await wait_active(k, streams)
    out: dict[str, Any] = {"flows": flows, "event_time_days": days}
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


# ------------------------------------------------------------------------------ identity_entity_graph


def ieg_cpu_breakdown(records: list[Any]) -> dict[str, float]:
    """µs per anchor of each in-process step of the IEG's handle, with no I/O."""
    from fraudrt.rtdl.identity_entity_graph import IdentityEntityGraph
    from fraudrt.rtdl.identity_entity_graph._graph import Staged
    from fraudrt.rtdl.identity_entity_graph._store import FlowRows
    from fraudrt.runtime import content_hash, pack_columns

    actor = IdentityEntityGraph()
    n = len(records)
    out = dict.fromkeys(("decode_and_validate", "inbox_hash_and_pack", "stage", "features", "sql_columns",
                         "commit_to_memory"), 0.0)
    t0 = time.process_time()
    parsed = [actor._observe(r) for r in records]
    out["decode_and_validate"] = time.process_time() - t0
    t0 = time.process_time()
    pack_columns([[r.event_id for r in records], [content_hash(r) for r in records]])
    out["inbox_hash_and_pack"] = time.process_time() - t0
    obs = [p[0] for p in parsed if not isinstance(p, str)]
    graph = actor.graph
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
        for key, spent in (("stage", t1 - t0), ("features", t2 - t1), ("sql_columns", t3 - t2),
                           ("commit_to_memory", time.process_time() - t3)):
            out[key] += spent
    return {k: round(v / n * 1e6, 1) for k, v in out.items()}


async def bench_identity_entity_graph(settings: Settings, meter: CpuMeter, flows: int, days: float,
                                      work: Path) -> dict[str, Any]:
    """The IEG reads only the flow anchor stream: one record per flow (two traffic events each)."""
    from fraudrt.rtdl.identity_entity_graph import IdentityEntityGraph, graph_features
    from fraudrt.runtime._reader import to_inbound

    summary = generate_world(GenerateRequest(out_dir=str(work / "world"), seed=7, n_flows=flows,
                                             duration_s=days * 86400, fraud_rate=0.02))
    anchors = world_envelopes(Path(summary.engine_run_root), "s3_flow_anchor_with_fraud_6B")
    flow_ids = [msgspec.json.decode(a)["payload"]["flow_id"] for a in anchors]
    freeze_heap()  # as a pack does once startup is over: the world's frames are not the actor's heap
    n = len(anchors)
    stream = settings.streams.name("flow_anchor_fraud")
    async with kinesis_client(settings.kinesis) as k:
        await ensure_stream(k, stream, 1)
        await wait_active(k, [stream])
    out: dict[str, Any] = {"flows": n, "traffic_events": 2 * n, "event_time_days": days}
    async with KinesisBus(settings.kinesis) as bus:
        shard = (await bus.list_shards(stream))[0]
        c0, t0 = meter.snap(), time.perf_counter()
        await put_all(bus, stream, anchors)
        wall = time.perf_counter() - t0
        out["put_ceiling"] = {"records_per_s": round(n / wall), "cpu_s": CpuMeter.delta(c0, meter.snap())}
        c0, t0 = meter.snap(), time.perf_counter()
        iterator, got, sample = await bus.get_shard_iterator(stream, shard), 0, []
        while got < n:
            page = await bus.get_records(stream, shard, iterator, 10000)
            got += len(page.records)
            sample.extend(to_inbound(r) for r in page.records[:max(0, 20000 - len(sample))])
            iterator = page.next_iterator or iterator
        wall = time.perf_counter() - t0
        out["get_ceiling"] = {"records_per_s": round(n / wall), "cpu_s": CpuMeter.delta(c0, meter.snap())}
        out["cpu_us_per_anchor_in_process"] = ieg_cpu_breakdown(sample)

        pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=2, max_size=8)
        async with pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.runtime", "fraudrt.rtdl.identity_entity_graph")
        ieg = IdentityEntityGraph()
        rss0 = psutil.Process().memory_info().rss
        wall, cpu, runner = await run_alone(settings, meter, bus, pool, ieg, [stream], lambda: ieg.flows_applied >= n)
        out["process_rss_growth_mb"] = round((psutil.Process().memory_info().rss - rss0) / 2**20, 1)
        out["identity_entity_graph"] = {
            "anchors_per_s": round(n / wall), "traffic_events_per_s_equivalent": round(2 * n / wall),
            "wall_s": round(wall, 2), "batches": runner.stats.batches, "cpu_s": cpu,
            "cpu_us_per_anchor": {k: round(v / n * 1e6, 1) for k, v in cpu.items()},
            "cpu_us_per_traffic_event": {k: round(v / (2 * n) * 1e6, 1) for k, v in cpu.items()},
            "graph": {k: v for k, v in ieg.metrics().items() if k.startswith(("edges", "entities", "flows"))},
        }

        # The typed reader: batches of 100 random flows, one statement each.

        async def ask(batch: list[int]) -> bool:
            return all(g.complete for g in await graph_features(pool, RUN, batch))

        out["reader_100_flows_ms"] = await reader_latency(ask, flow_ids, 2000)
        await pool.close()
    return out


# ------------------------------------------------------------------------------ the whole pack


async def bench_rtdl_core_pack(settings: Settings, meter: CpuMeter, flows: int, days: float,
                               work: Path) -> dict[str, Any]:
    """All four actors of rtdl_core in one process, wired as the pack wires them (one reader per
    stream's shard shared by its subscribers), over a world whose traffic and context are on the
    bus already: sustained traffic events/s until every actor's checkpoints reach the streams' ends."""
    from fraudrt.rtdl.archive_writer import ArchiveWriter
    from fraudrt.rtdl.context_store_flow_binding import ContextStoreFlowBinding
    from fraudrt.rtdl.identity_entity_graph import IdentityEntityGraph
    from fraudrt.rtdl.online_feature_plane import OnlineFeaturePlane
    from fraudrt.substrate import bootstrap
    from tests.support.harness import LocalPack
    from tests.support.world_bus import WorldPins, output_rows

    await bootstrap(settings)
    summary = generate_world(GenerateRequest(out_dir=str(work / "pack_world"), seed=9, n_flows=flows,
                                             duration_s=days * 86400, fraud_rate=0.02))
    pins = WorldPins(summary, RUN)
    outputs = {"traffic_fraud": "s3_event_stream_with_fraud_6B", **CONTEXT}
    last: dict[str, tuple[str, str]] = {}
    total = traffic = 0
    out: dict[str, Any] = {"flows": flows, "event_time_days": days}
    async with KinesisBus(settings.kinesis) as bus:
        c0, t0 = meter.snap(), time.perf_counter()
        for logical, output in outputs.items():
            datas = pins.envelopes(output, output_rows(summary, output))
            stream = settings.streams.name(logical)
            total += len(datas)
            if logical == "traffic_fraud":
                traffic = len(datas)
            acks = await put(bus, stream, datas)
            last[stream] = (acks[-1].shard_id, acks[-1].sequence_number)
            del datas
        out["put_ceiling"] = {"records": total, "records_per_s": round(total / (time.perf_counter() - t0)),
                              "cpu_s": CpuMeter.delta(c0, meter.snap())}
        out["raw_get_ceiling"] = await _raw_read(bus, list(last), meter, total)
        pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=2, max_size=12,
                                         server_settings={"jit": "off"})
        async with pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.runtime", "fraudrt.rtdl.archive_writer",
                                   "fraudrt.rtdl.context_store_flow_binding", "fraudrt.rtdl.online_feature_plane",
                                   "fraudrt.rtdl.identity_entity_graph")
        actors = [("archive_writer", ArchiveWriter()), ("context_store_flow_binding", ContextStoreFlowBinding()),
                  ("online_feature_plane", OnlineFeaturePlane()), ("identity_entity_graph", IdentityEntityGraph())]
        c0, t0 = meter.snap(), time.perf_counter()
        async with LocalPack(settings, actors, RUN, pool, bus, pack_id="bench_rtdl_core") as lp:

            def done() -> bool:
                for runner in lp.runners.values():
                    for stream in runner.actor.subscriptions(settings):
                        if stream in last and runner.checkpoints.get((stream, last[stream][0])) != last[stream][1]:
                            return False
                return True

            while not done():  # noqa: ASYNC110 (a bench polls its actors' checkpoints)
                await anyio.sleep(0.02)
            wall = time.perf_counter() - t0
            cpu = CpuMeter.delta(c0, meter.snap())
        out["pack"] = {"traffic_events": traffic, "records": total, "wall_s": round(wall, 2),
                       "traffic_events_per_s": round(traffic / wall), "records_per_s": round(total / wall),
                       "cpu_s": cpu, "cpu_us_per_traffic_event": {k: round(v / traffic * 1e6, 1)
                                                                  for k, v in cpu.items()},
                       "batches": {n: r.stats.batches for n, r in lp.runners.items()},
                       "dead_letters": {n: r.stats.dead_lettered for n, r in lp.runners.items()}}
        await pool.close()
    return out


SECTIONS = {"online_feature_plane": bench_online_feature_plane,
            "context_store_flow_binding": bench_context_store_flow_binding,
            "identity_entity_graph": bench_identity_entity_graph,
            "rtdl_core_pack": bench_rtdl_core_pack}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=3.0)
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
        state = load_state(settings)
        meter = CpuMeter({"kinesalite": state.services["kinesis"].process.pid,
                          "postgres": state.services["postgres"].process.pid})
        results: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg()}
        for name in args.only or sorted(SECTIONS):
            results[name] = anyio.run(SECTIONS[name], settings, meter, args.flows, args.days, home)
        print(json.dumps(results, indent=2))
    finally:
        down(load_settings("embedded"), purge=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
