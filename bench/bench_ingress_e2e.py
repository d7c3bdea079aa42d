"""WSP -> IG -> Kinesis end to end, uncapped, through the real control_ingress pack process.

Generates a world, runs the oracle jobs, starts `fraudrt pack up control_ingress`, publishes READY
with `fraudrt sr ready`, and times READY -> every row of the in-scope outputs admitted (IG's
admit_total in its metrics file), once per receipt layout. Its own embedded substrate lives in a
temporary FRAUDRT_HOME.

    .venv/bin/python bench/bench_ingress_e2e.py [--flows 10000]
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

from bench_runtime import machine  # type: ignore[import-not-found]

from fraudrt._daemon import free_port


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
    return {"layout": layout, "events": expected, "wall_s": round(wall, 2), "events_per_s": round(expected / wall),
            "admit_total": ig.get("admit_total"), "duplicate_total": ig.get("duplicate_total"),
            "receipt_objects_total": ig.get("receipt_objects_total"),
            "wsp_push_retries_total": metrics(runs, run_id, "world_stream_producer").get("push_retries_total")}


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
