"""The decision path end to end through the real packs: WSP -> IG -> rtdl_core -> decision lane -> audit.

Everything runs as an operator runs it, in its own embedded substrate under a temporary
FRAUDRT_HOME: a generated world, the oracle jobs, `fraudrt pack up` of control_ingress, rtdl_core and
rtdl_decision_lane (three processes), `fraudrt sr ready`. Two phases (issue 12, Benchmark):

- **steady**: WSP paced (`wsp.speedup`) so traffic reaches IG at `--rate` events/s; latency from the
  components' own histograms once every AUTH_REQUEST is decided and audited: admit -> decision (DF),
  decision -> outcome (AL), admit -> audit (DLA);
- **throughput**: WSP unpaced; from READY to the last audit record, AUTH_REQUESTs decided and
  audited per second, and the traffic events (two per flow) admitted and processed per second.

Reported beside them: CPU seconds of each process (packs, substrate) over the phase, and the raw
PutRecords ceiling of the same kinesalite, measured in the same run.

    .venv/bin/python bench/bench_spine.py [--rate 500] [--steady-seconds 60] [--flows 40000] [--only steady|throughput]
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
import psutil
from bench_runtime import machine  # type: ignore[import-not-found]

from fraudrt._daemon import free_port
from fraudrt.config import load_settings
from fraudrt.runtime.packs import load_pack_state
from fraudrt.substrate import load_state

PACKS = ("control_ingress", "rtdl_core", "rtdl_decision_lane")
PACK_IDS = {"control_ingress": "local_parity_control_ingress_v0", "rtdl_core": "local_parity_rtdl_core_v0",
            "rtdl_decision_lane": "local_parity_rtdl_decision_lane_v0"}


def cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "fraudrt", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"fraudrt {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def metrics(runs: Path, run_id: str, component: str) -> dict[str, Any]:
    path = runs / "fraud-platform" / run_id / component / "metrics" / "last_metrics.json"
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"counters": {}, "gauges": {}}
    return doc


def latency(doc: dict[str, Any], hop: str) -> dict[str, Any]:
    g = doc.get("gauges", {})
    return {q: g.get(f"latency_ms.{hop}.{q}") for q in ("count", "p50", "p95", "p99", "max")}


def processes(env: dict[str, str]) -> dict[str, psutil.Process]:
    settings = load_settings("embedded", env=env)
    out = {}
    for name, svc in load_state(settings).services.items():
        out[name] = psutil.Process(svc.process.pid)
    for short, pack_id in PACK_IDS.items():
        state = load_pack_state(settings, pack_id)
        if state is not None:
            out[short] = psutil.Process(state.process.pid)
    return out


def cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in procs.items():
        try:
            t = p.cpu_times()
            kids = sum(c.cpu_times().user + c.cpu_times().system for c in p.children(recursive=True))
            out[name] = t.user + t.system + kids
        except psutil.Error:
            out[name] = 0.0
    return out


def world(env: dict[str, str], home: Path, flows: int, duration_s: float, label: str) -> tuple[dict[str, Any], int]:
    summary = json.loads(cli(env, "engine", "generate", "--out", str(home / f"worlds-{label}"), "--flows", str(flows),
                             "--duration", f"{int(duration_s)}s", "--json"))
    root = f"s3://oracle-store/bench/{label}/{summary['run_id']}"
    env.update(ORACLE_SYNC_SOURCE=summary["engine_run_root"], ORACLE_ENGINE_RUN_ROOT=root,
               ORACLE_SCENARIO_ID=summary["scenario_id"])
    cli(env, "oracle", "sync")
    cli(env, "oracle", "pack")
    cli(env, "oracle", "stream-sort")
    traffic = summary["row_counts"]["s3_event_stream_with_fraud_6B"]
    return summary, traffic // 2


def phase(env: dict[str, str], runs: Path, label: str, requests: int, traffic: int, speedup: float) -> dict[str, Any]:
    env = dict(env, WSP_STREAM_SPEEDUP=str(speedup), SR_RUN_EQUIVALENCE_KEY=f"bench_spine_{label}_{time.time_ns()}")
    run_id = cli(env, "run", "new").strip()
    for pack in PACKS:
        cli(env, "pack", "up", pack)
    try:
        procs = processes(env)
        c0, t0 = cpu(procs), time.perf_counter()
        cli(env, "sr", "ready")
        deadline = time.monotonic() + 3600
        while metrics(runs, run_id, "decision_log_audit")["counters"].get("chains_resolved_total", 0) < requests:
            if time.monotonic() > deadline:
                raise SystemExit(f"{label}: not every request audited after an hour")
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        used = {k: round(v - c0.get(k, 0.0), 2) for k, v in cpu(procs).items()}
        time.sleep(2.5)  # one more report round, so the histograms hold the last records
    finally:
        for pack in reversed(PACKS):
            cli(env, "pack", "down", pack)
    df = metrics(runs, run_id, "decision_fabric")
    al = metrics(runs, run_id, "action_layer")
    dla = metrics(runs, run_id, "decision_log_audit")
    return {"phase": label, "speedup": speedup, "auth_requests": requests, "traffic_events": traffic,
            "wall_s": round(wall, 2), "decided_and_audited_per_s": round(requests / wall),
            "traffic_events_per_s": round(traffic / wall), "cpu_s": used,
            "admit_to_decision_ms": latency(df, "admit_to_decision"),
            "decision_to_outcome_ms": latency(al, "decision_to_outcome"),
            "admit_to_audit_ms": latency(dla, "admit_to_audit"),
            "decisions": {k: v for k, v in df["counters"].items() if k.startswith("decisions")},
            "lineage_unresolved_total": dla["counters"].get("lineage_unresolved_total")}


async def _raw_put_ceiling(env: dict[str, str], n: int = 20_000) -> dict[str, Any]:
    """PutRecords of ~700-byte records, 500 per call, to a scratch stream of the same kinesalite: the
    bus's write ceiling on this machine, beside what the spine reached."""
    from fraudrt.runtime.bus import KinesisBus, PutEntry
    from fraudrt.substrate import ensure_stream, kinesis_client, wait_active

    settings = load_settings("embedded", env=env)
    stream = "bench.ceiling.v1"
    async with kinesis_client(settings.kinesis) as k:
        await ensure_stream(k, stream, 1)
        await wait_active(k, [stream])
    body = json.dumps({"platform_run_id": "bench", "payload": "x" * 600})
    async with KinesisBus(settings.kinesis) as bus:
        t0 = time.perf_counter()
        for start in range(0, n, 500):
            entries = [PutEntry((body[:-1] + f',"event_id":"{i:064x}"}}').encode(), str(i))
                       for i in range(start, min(n, start + 500))]
            assert all(r.ok for r in await bus.put_records(stream, entries))
        wall = time.perf_counter() - t0
    return {"records": n, "put_records_per_s": round(n / wall)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500.0, help="steady phase: traffic events/s")
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--flows", type=int, default=40_000, help="throughput phase: flows")
    parser.add_argument("--only", choices=["steady", "throughput"], action="append")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fraudrt-bench-spine-"))
    os.chmod(home, 0o755)
    runs = home / "runs"
    env = dict(os.environ, FRAUDRT_HOME=str(home), FRAUDRT_RUNS_ROOT=str(runs), FRAUDRT_PROFILE="embedded",
               IG_PORT=str(free_port()), WSP_MAX_EVENTS_PER_OUTPUT="0",
               IG_RECEIPTS_LAYOUT="batch")
    results: list[dict[str, Any]] = []
    try:
        cli(env, "substrate", "up")
        cli(env, "substrate", "bootstrap")
        if not args.only or "steady" in args.only:
            # A world of one simulated hour at ~60 arrivals/s is paced so its traffic (two events per
            # flow) reaches IG at --rate events/s.
            flows = int(args.rate / 2 * args.steady_seconds)
            duration = 3600.0
            _summary, requests = world(env, home, flows, duration, "steady")
            speedup = (args.rate / 2) / (flows / duration)
            results.append(phase(env, runs, "steady", requests, 2 * requests, speedup))
        if not args.only or "throughput" in args.only:
            _summary, requests = world(env, home, args.flows, args.flows / 60.0, "throughput")
            results.append(phase(env, runs, "throughput", requests, 2 * requests, 0.0))
        ceiling = anyio.run(_raw_put_ceiling, env)
        print(json.dumps({"machine": machine(), "results": results, "kinesis_ceiling": ceiling}, indent=2))
    finally:
        for pack in reversed(PACKS):
            subprocess.run([sys.executable, "-m", "fraudrt", "pack", "down", pack], env=env, capture_output=True)
        subprocess.run([sys.executable, "-m", "fraudrt", "substrate", "down", "--purge"], env=env,
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
