"""WSP -> IG -> Kinesis end to end, uncapped, through the real control_ingress pack process.

Generates a world, runs the oracle jobs, starts `fraudrt pack up control_ingress`, publishes READY
with `fraudrt sr ready`, and times READY -> every row of the in-scope outputs admitted (IG's
admit_total in its metrics file), once per receipt layout. Its own embedded substrate lives in a
temporary FRAUDRT_HOME.

Then it reads each stream back from kinesalite and reports what consumers see of the order:
`out_of_order` counts records whose ts_utc is older than the record before them on the same stream,
`behind_newest` those older than any record before them (WSP promises zero for both), and
`max_cross_stream_skew_s` is the largest amount of event time by which a record arrived later than
a record of another stream (by Kinesis arrival time, millisecond resolution), to compare with
`wsp.order_window_seconds`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from bench_runtime import machine  # type: ignore[import-not-found]

from fraudrt._daemon import free_port
from fraudrt.config import load_settings
from fraudrt.contracts import parse_ts_utc
from fraudrt.runtime.bus import KinesisBus

STREAM_OF = {"arrival_events_5B": "arrival_events", "s1_arrival_entities_6B": "arrival_entities",
             "s3_flow_anchor_with_fraud_6B": "flow_anchor_fraud", "s3_event_stream_with_fraud_6B": "traffic_fraud"}


def cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "fraudrt", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"fraudrt {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def metrics(runs: Path, run_id: str, component: str) -> dict[str, Any]:
    path = runs / "fraud-platform" / run_id / component / "metrics" / "last_metrics.json"
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())["counters"]
        return loaded
    except (OSError, ValueError, KeyError):
        return {}


async def _read_stream(bus: KinesisBus, stream: str) -> list[Any]:
    out: list[Any] = []
    for shard in await bus.list_shards(stream):
        iterator: str | None = await bus.get_shard_iterator(stream, shard)
        while iterator:
            got = await bus.get_records(stream, shard, iterator)
            out.extend(got.records)
            if not got.records and got.millis_behind == 0:
                break
            iterator = got.next_iterator
    return out


async def order_on_bus(env: dict[str, str], run_id: str) -> dict[str, Any]:
    """Per stream: records of `run_id` and how many are older than the one before them; across
    streams: the largest event-time skew seen in arrival order."""
    settings = load_settings("embedded", env=env)
    per_stream: dict[str, Any] = {}
    arrivals: list[tuple[float, float]] = []  # (arrival time, event time)
    async with KinesisBus(settings.kinesis) as bus:
        for logical in STREAM_OF.values():
            previous = newest_here = float("-inf")
            count = late = behind = 0
            for rec in await _read_stream(bus, settings.streams.name(logical)):
                doc = json.loads(rec.data)
                if doc.get("platform_run_id") != run_id:
                    continue
                ts = parse_ts_utc(doc["ts_utc"]).timestamp()
                count += 1
                late += ts < previous
                behind += ts < newest_here
                previous, newest_here = ts, max(newest_here, ts)
                arrivals.append((rec.arrival_ts, ts))
            per_stream[logical] = {"records": count, "out_of_order": late, "behind_newest": behind}
    skew = 0.0
    newest = float("-inf")
    arrivals.sort()
    i = 0
    while i < len(arrivals):  # records of one arrival millisecond are not ordered among themselves
        j = i
        while j < len(arrivals) and arrivals[j][0] == arrivals[i][0]:
            j += 1
        skew = max(skew, *(newest - ts for _a, ts in arrivals[i:j]))
        newest = max(newest, *(ts for _a, ts in arrivals[i:j]))
        i = j
    return {"streams": per_stream, "max_cross_stream_skew_s": round(skew, 3)}


def one_layout(env: dict[str, str], runs: Path, layout: str, expected: int, key: str) -> dict[str, Any]:
    env = dict(env, IG_RECEIPTS_LAYOUT=layout, SR_RUN_EQUIVALENCE_KEY=key)
    run_id = cli(env, "run", "new").strip()
    cli(env, "pack", "up", "control_ingress")
    try:
        t0 = time.perf_counter()
        cli(env, "sr", "ready")
        deadline = time.monotonic() + 1800
        while metrics(runs, run_id, "ingestion_gate").get("admit_total", 0) < expected:
            if time.monotonic() > deadline:
                raise SystemExit(f"{layout}: not all admitted after 30 min: {metrics(runs, run_id, 'ingestion_gate')}")
            time.sleep(0.2)
        wall = time.perf_counter() - t0
    finally:
        cli(env, "pack", "down", "control_ingress")
    ig = metrics(runs, run_id, "ingestion_gate")
    order = anyio.run(order_on_bus, env, run_id)
    return {"layout": layout, "events": expected, "wall_s": round(wall, 2), "events_per_s": round(expected / wall),
            "admit_total": ig.get("admit_total"), "duplicate_total": ig.get("duplicate_total"),
            "receipt_objects_total": ig.get("receipt_objects_total"),
            "wsp_push_retries_total": metrics(runs, run_id, "world_stream_producer").get("push_retries_total"),
            "order": order}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=10_000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fraudrt-bench-e2e-"))
    os.chmod(home, 0o755)
    runs = home / "runs"
    env = dict(os.environ, FRAUDRT_HOME=str(home), FRAUDRT_RUNS_ROOT=str(runs), FRAUDRT_PROFILE="embedded",
               IG_PORT=str(free_port()), WSP_MAX_EVENTS_PER_OUTPUT="0")
    try:
        cli(env, "substrate", "up")
        cli(env, "substrate", "bootstrap")
        summary = json.loads(cli(env, "engine", "generate", "--out", str(home / "worlds"), "--flows",
                                 str(args.flows), "--json"))
        root = f"s3://oracle-store/bench/{summary['run_id']}"
        env.update(ORACLE_SYNC_SOURCE=summary["engine_run_root"], ORACLE_ENGINE_RUN_ROOT=root,
                   ORACLE_SCENARIO_ID=summary["scenario_id"])
        cli(env, "oracle", "sync")
        cli(env, "oracle", "pack")
        cli(env, "oracle", "stream-sort")
        counts = summary["row_counts"]
        expected = sum(counts[o] for o in ("arrival_events_5B", "s1_arrival_entities_6B",
                                           "s3_flow_anchor_with_fraud_6B", "s3_event_stream_with_fraud_6B"))
        results = [one_layout(env, runs, layout, expected, f"bench_{layout}_{int(time.time())}")
                   for layout in ("batch", "per_event")]
        print(json.dumps({"machine": machine(), "flows": args.flows, "results": results}, indent=2))
    finally:
        subprocess.run([sys.executable, "-m", "fraudrt", "pack", "down", "control_ingress"], env=env,
                       capture_output=True)
        subprocess.run([sys.executable, "-m", "fraudrt", "substrate", "down", "--purge"], env=env,
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
