"""The case plane on the embedded substrate: CaseTrigger -> CM -> LS throughput, and the investigator API's
latency, in one process and event loop as the case_labels pack runs them.

N decisions (1 in `--escalate-every` REVIEW or DECLINE, the rest APPROVE at a low score) are put on
`fp.bus.rtdl.v1`; the clock runs from starting the components until CaseTrigger has evaluated all of
them, CM has opened a case per escalation, and the Label Store has accepted each case's AUTO label
(through the outbox, the bus and back). Then, with the plane idle, the API answers a mix of queue
reads, case reads and notes from `--concurrency` clients. CPU seconds of this process, kinesalite and
Postgres say where the time goes.

    .venv/bin/python bench/bench_case_labels.py [--decisions 20000] [--escalate-every 10]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_runtime import CpuMeter, machine

from fraudrt.case_labels.case_mgmt import case_api_key
from fraudrt.config import Settings, load_settings
from fraudrt.runtime import LatencyHistogram
from fraudrt.runtime.bus import KinesisBus
from fraudrt.substrate import bootstrap, down, up
from tests.support.case_lane import decision, run_pins, running_plane
from tests.support.harness import put

RUN = "platform_20260101T000000Z"


async def _until(probe: Any, done: Any, timeout: float = 600.0) -> float:
    t0 = time.perf_counter()
    while not done(await probe()):
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the plane did not finish")
        await anyio.sleep(0.02)
    return time.perf_counter()


async def bench(settings: Settings, n: int, every: int, api_requests: int, concurrency: int,
                meter: CpuMeter) -> dict[str, Any]:
    pins = run_pins(RUN)
    escalated = [f for f in range(n) if f % every == 0]
    envelopes = [decision(pins, f, action=("REVIEW" if f % (2 * every) else "DECLINE") if f % every == 0 else "APPROVE",
                          score=0.6 if f % every == 0 else 0.05, second=f / 100).envelope for f in range(n)]
    pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=2, max_size=8, server_settings={"jit": "off"})
    results: dict[str, Any] = {"decisions": n, "escalated": len(escalated)}
    async with KinesisBus(settings.kinesis) as bus:
        t0 = time.perf_counter()
        await put(bus, settings.streams.name("rtdl"), envelopes)
        results["put_s"] = round(time.perf_counter() - t0, 2)
        c0, t0 = meter.snap(), time.perf_counter()
        async with running_plane(settings, RUN, pool, bus, api=True, api_key=case_api_key(settings)) as plane:
            ct, cm, ls = (plane.components[c] for c in ("case_trigger", "case_mgmt", "label_store"))

            async def metrics() -> tuple[int, int, int]:
                return (ct.metrics().get("triggers_seen", 0), cm.metrics().get("cases_created", 0),
                        ls.metrics().get("accepted", 0))

            t_ct = await _until(metrics, lambda m: m[0] >= n)
            t_cm = await _until(metrics, lambda m: m[1] >= len(escalated))
            t_ls = await _until(metrics, lambda m: m[2] >= len(escalated))
            cpu = CpuMeter.delta(c0, meter.snap())
            results["pipeline"] = {
                "case_trigger_decisions_per_s": round(n / (t_ct - t0)),
                "all_cases_open_s": round(t_cm - t0, 2), "all_labels_accepted_s": round(t_ls - t0, 2),
                "decisions_per_s_end_to_end": round(n / (t_ls - t0)), "cpu_s": cpu,
                "cpu_us_per_decision": {k: round(v / n * 1e6) for k, v in cpu.items()},
                "batches": {name: plane.pack.runners[name].stats.batches for name in plane.pack.runners}}
            results["api"] = await _api(plane, api_requests, concurrency, meter)
    await pool.close()
    return results


async def _api(plane: Any, total: int, concurrency: int, meter: CpuMeter) -> dict[str, Any]:
    headers = {"X-Case-Api-Key": plane.api_key, "Content-Type": "application/json"}
    hist = {k: LatencyHistogram() for k in ("queue", "case", "note")}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{plane.api_url}/v1/cases?limit=500", headers=headers) as resp:
            ids = [c["case_id"] for c in (await resp.json())["cases"]]
        rnd = random.Random(7)
        todo = [rnd.choice(["queue", "case", "case", "note"]) for _ in range(total)]
        c0, t0 = meter.snap(), time.perf_counter()

        async def client(k: int) -> None:
            for i in range(k, total, concurrency):
                kind, case_id = todo[i], rnd.choice(ids)
                started = time.perf_counter()
                if kind == "queue":
                    req = http.get(f"{plane.api_url}/v1/cases?state=OPEN&min_score=0.5&limit=50", headers=headers)
                elif kind == "case":
                    req = http.get(f"{plane.api_url}/v1/cases/{case_id}", headers=headers)
                else:
                    req = http.post(f"{plane.api_url}/v1/cases/{case_id}/notes", headers=headers,
                                    data=json.dumps({"actor": f"inv{k}", "text": f"note {i}"}))
                async with req as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                hist[kind].observe((time.perf_counter() - started) * 1000)

        async with anyio.create_task_group() as tg:
            for k in range(concurrency):
                tg.start_soon(client, k)
        wall = time.perf_counter() - t0
    return {"requests": total, "concurrency": concurrency, "requests_per_s": round(total / wall),
            "latency_ms": {k: h.summary() for k, h in hist.items()}, "cpu_s": CpuMeter.delta(c0, meter.snap())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--escalate-every", type=int, default=10)
    parser.add_argument("--api-requests", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fraudrt-bench-"))
    os.chmod(home, 0o755)
    os.environ.update(FRAUDRT_HOME=str(home), FRAUDRT_RUNS_ROOT=str(home / "runs"), CASE_API_PORT="0")
    settings = load_settings("embedded")
    try:
        anyio.run(lambda: up(settings))
        settings = load_settings("embedded")
        anyio.run(lambda: bootstrap(settings))
        meter = CpuMeter.for_substrate(settings)
        results = anyio.run(bench, settings, args.decisions, args.escalate_every, args.api_requests,
                            args.concurrency, meter)
        print(json.dumps({"machine": machine(), "load_avg_1m": round(os.getloadavg()[0], 2), **results}, indent=2))
    finally:
        down(load_settings("embedded"), purge=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
