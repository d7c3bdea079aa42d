"""Pass-through actor throughput on the embedded substrate, beside raw kinesalite rates as the ceiling.

A pass-through actor reads stream A, commits (state row + checkpoint + outbox row) per batch, and
the outbox relay re-publishes every record to stream B. Measured in one process, one event loop,
exactly as a pack runs it. CPU seconds of this process, kinesalite and Postgres over each phase say
where the time goes.

    .venv/bin/python bench/bench_runtime.py [--records 50000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio
import asyncpg
import psutil

from fraudrt.config import Settings, load_settings
from fraudrt.runtime import Actor, Batch, ComponentContext
from fraudrt.runtime._outbox import OutboxRelay
from fraudrt.runtime._reader import Delivery, ShardReader
from fraudrt.runtime._runner import ActorRunner
from fraudrt.runtime.bus import KinesisBus, PutEntry
from fraudrt.runtime.packs import apply_migrations
from fraudrt.substrate import down, ensure_stream, kinesis_client, load_state, up, wait_active

RUN = "platform_20260101T000000Z"


class PassThrough(Actor):
    name: ClassVar[str] = "bench_passthrough"
    max_batch: ClassVar[int] = 5000

    def __init__(self, source: str, target: str) -> None:
        self.source, self.target = source, target

    def subscriptions(self, settings: Settings) -> list[str]:
        return [self.source]

    async def handle(self, batch: Batch) -> None:
        for r in batch.records:
            batch.emit(self.target, r.data, partition_key=r.partition_key, event_id=r.event_id or r.sequence_number)


def cpu_of(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        # children_* fields hold exited children (Postgres backends of closed connections).
        total = sum(proc.cpu_times()[:4])
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += sum(child.cpu_times()[:4])
        return float(total)
    except psutil.NoSuchProcess:
        return 0.0


class CpuMeter:
    """CPU seconds of this process (`client`) and of each named substrate process (with children).

    Every benchmark measures with this one meter; `for_substrate` finds the services by the pids
    the launcher recorded, so another substrate on a shared machine is not counted.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    @classmethod
    def for_substrate(cls, settings: Settings) -> CpuMeter:
        services = load_state(settings).services
        names = {"s3": "seaweedfs", "kinesis": "kinesalite", "postgres": "postgres"}
        return cls({names[n]: svc.process.pid for n, svc in services.items() if n in names})

    def snap(self) -> dict[str, float]:
        return {"client": time.process_time(), **{n: cpu_of(p) for n, p in self.pids.items()}}

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: round(b[k] - a[k], 2) for k in a}

    @staticmethod
    def per_item_us(a: dict[str, float], b: dict[str, float], n: int) -> dict[str, int]:
        return {k: round((b[k] - a[k]) / n * 1e6) for k in a}


async def bench(settings: Settings, n: int, meter: CpuMeter) -> dict[str, Any]:
    src, dst = "bench.in.v1", "bench.out.v1"
    async with kinesis_client(settings.kinesis) as k:
        for s in (src, dst):
            await ensure_stream(k, s, 1)
        await wait_active(k, [src, dst])
    results: dict[str, Any] = {"records": n}
    payload = json.dumps({"platform_run_id": RUN, "event_type": "bench", "payload": {"x": "y" * 200}})
    async with KinesisBus(settings.kinesis) as bus:
        shard = (await bus.list_shards(src))[0]
        # raw PutRecords (the write ceiling)
        c0, t0 = meter.snap(), time.perf_counter()
        for start in range(0, n, 500):
            entries = [PutEntry((payload[:-1] + f',"event_id":"{i:064x}"}}').encode(), str(i))
                       for i in range(start, min(n, start + 500))]
            res = await bus.put_records(src, entries)
            assert all(r.ok for r in res)
        wall = time.perf_counter() - t0
        results["raw_put"] = {"rec_per_s": round(n / wall), "wall_s": round(wall, 2),
                              "cpu_s": CpuMeter.delta(c0, meter.snap())}
        # raw GetRecords (the read ceiling)
        c0, t0 = meter.snap(), time.perf_counter()
        it, got = await bus.get_shard_iterator(src, shard), 0
        while got < n:
            r = await bus.get_records(src, shard, it, 10000)
            got += len(r.records)
            it = r.next_iterator or it
        wall = time.perf_counter() - t0
        results["raw_get"] = {"rec_per_s": round(n / wall), "wall_s": round(wall, 2),
                              "cpu_s": CpuMeter.delta(c0, meter.snap())}
        # pass-through actor
        pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=2, max_size=8)
        async with pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.runtime")
        stopping = anyio.Event()
        ctx = ComponentContext(settings=settings, platform_run_id=RUN, pack_id="bench", pool=pool, stopping=stopping)
        relay = OutboxRelay(pool, bus, owner="bench")
        send, receive = anyio.create_memory_object_stream[Delivery](max_buffer_size=4)
        runner = ActorRunner(PassThrough(src, dst), ctx, receive, relay)
        await runner.load()
        reader = ShardReader(bus, src, shard, [send], None, limit=5000)
        c0, t0 = meter.snap(), time.perf_counter()
        handled_at = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            tg.start_soon(reader.run, stopping)
            tg.start_soon(relay.run, stopping)
            while relay.stats.published < n:
                if handled_at is None and runner.stats.handled >= n:
                    handled_at = time.perf_counter() - t0
                await anyio.sleep(0.01)
            wall = time.perf_counter() - t0
            stopping.set()
            tg.cancel_scope.cancel()
        await pool.close()
        await anyio.sleep(0.5)  # let the backends exit so their CPU is accounted to the postmaster
        results["passthrough"] = {
            "rec_per_s": round(n / wall), "wall_s": round(wall, 2),
            "handled_wall_s": round(handled_at or wall, 2), "batches": runner.stats.batches,
            "cpu_s": CpuMeter.delta(c0, meter.snap()),
        }
    return results


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu_model": model, "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fraudrt-bench-"))
    os.chmod(home, 0o755)
    os.environ.update(FRAUDRT_HOME=str(home), FRAUDRT_RUNS_ROOT=str(home / "runs"))
    settings = load_settings("embedded")
    try:
        anyio.run(lambda: up(settings))
        settings = load_settings("embedded")
        state = load_state(settings)
        meter = CpuMeter({"kinesalite": state.services["kinesis"].process.pid,
                          "postgres": state.services["postgres"].process.pid})  # no S3 in this bench
        results = anyio.run(bench, settings, args.records, meter)
        print(json.dumps({"machine": machine(), **results}, indent=2))
    finally:
        down(load_settings("embedded"), purge=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
