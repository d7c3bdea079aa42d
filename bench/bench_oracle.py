"""Benchmark the oracle stream sort against DuckDB and against a plain copy (the floor).

    .venv/bin/python bench/bench_oracle.py [--flows 5000000] [--budget-mb 4096] [--small-budget-mb 512] [--repeat 3]

Generates (once, cached under --work) an engine world with 2 x flows traffic rows, then sorts the
fraud traffic output `s3_event_stream_with_fraud_6B` from local parquet files with:

- `fraudrt`      : fraudrt.oracle.sort_sources with the given memory budget (the job's sort core);
- `fraudrt-spill`: the same with a small budget (the external distribution-sort path);
- `duckdb`       : COPY (... ORDER BY CAST(ts_utc AS TIMESTAMP), filename, file_row_number) TO parquet,
                   memory_limit = the same budget, threads = nproc, zstd;
- `duckdb-spill` : the same with the small budget;
- `copy-polars`  : polars streaming scan -> sink_parquet, no sort (the floor);
- `copy-duckdb`  : DuckDB COPY without ORDER BY (its floor).

Each run is its own process, started with the environment the stream-sort job gets
(fraudrt.oracle._sort.SORT_PROCESS_ENV, for every mode alike), and reports its own peak resident
memory: VmHWM from /proc/self/status at exit, which exec resets. (wait4's ru_maxrss is no good here:
on Linux it carries the parent's high-water mark across fork and exec, so every run read at least
this parent's own peak.) Runs are interleaved and repeated and the median is reported, with the CPU
seconds each run used (user + system, from wait4) beside the wall time, since the machine is shared.
Local files, not S3: the job's S3 legs (download sources, upload parts) are plain object copies that
overlap the sort and are measured by the integration tests, not here. Results go to stdout as a
Markdown table and to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OUTPUT_ID = "s3_event_stream_with_fraud_6B"


def machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    import duckdb
    import polars
    import pyarrow

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "polars": polars.__version__,
        "pyarrow": pyarrow.__version__,
        "duckdb": duckdb.__version__,
    }


def ensure_world(work: Path, flows: int) -> list[str]:
    from fraudrt.engine import GenerateRequest, generate_world, output_paths

    marker = work / f"world-{flows}.json"
    if marker.is_file():
        root = json.loads(marker.read_text())["engine_run_root"]
    else:
        t0 = time.perf_counter()
        summary = generate_world(
            GenerateRequest(out_dir=str(work / "world"), n_flows=flows, seed=42, n_parts=16, overwrite=True)
        )
        root = summary.engine_run_root
        marker.write_text(json.dumps({"engine_run_root": root, "generate_s": time.perf_counter() - t0}))
    return [str(p) for p in output_paths(root, OUTPUT_ID, "baseline_v1")]


# ------------------------------------------------------------------------------------------------
# One run (executed in a child process: `bench_oracle.py --child <mode> ...`)
# ------------------------------------------------------------------------------------------------


def child(mode: str, files: list[str], out: Path, budget_mb: int, rows_per_part: int) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if mode in ("fraudrt", "fraudrt-spill"):
        from fraudrt.oracle import SortConfig, SourceFile, sort_sources

        cfg = SortConfig(
            work_dir=str(out.parent / (out.name + "-work")),
            memory_budget_bytes=budget_mb * 2**20,
            rows_per_part=rows_per_part,
        )
        stats = sort_sources([SourceFile(path=f, name=f) for f in files], out, cfg, lambda _p: None)
        extra = {"strategy": stats.strategy, "units": stats.units, "spill_mib": round(stats.spill_bytes / 2**20)}
    elif mode in ("duckdb", "duckdb-spill", "copy-duckdb"):
        import duckdb

        con = duckdb.connect()
        tmp = out.parent / (out.name + "-duckdb-tmp")
        con.execute(f"SET memory_limit='{budget_mb}MB'")
        con.execute(f"SET threads={os.cpu_count()}")
        con.execute("SET preserve_insertion_order=false")
        con.execute(f"SET temp_directory='{tmp}'")
        order = "" if mode == "copy-duckdb" else " ORDER BY CAST(ts_utc AS TIMESTAMP), filename, file_row_number"
        con.execute(
            f"COPY (SELECT * EXCLUDE (filename, file_row_number) FROM read_parquet({files!r}, filename=true,"
            f" file_row_number=true){order}) TO '{out}' (FORMAT parquet, COMPRESSION zstd,"
            f" ROW_GROUP_SIZE 131072, FILE_SIZE_BYTES '64MB')"
        )
        shutil.rmtree(tmp, ignore_errors=True)
    elif mode == "copy-polars":
        import polars as pl

        pl.scan_parquet(files).sink_parquet(pl.PartitionBy(str(out), max_rows_per_file=rows_per_part))
    else:
        raise SystemExit(f"unknown mode {mode}")
    elapsed = time.perf_counter() - t0
    peak_kib = own_peak_kib()  # before the row count below reads the output back
    import polars as pl

    rows = pl.scan_parquet(str(out) + "/**/*.parquet").select(pl.len()).collect().item()
    return {"mode": mode, "seconds": elapsed, "rows": rows, "peak_rss_mib": round(peak_kib / 1024), **extra}


def own_peak_kib() -> int:
    """This process's peak resident set size (VmHWM), in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_child(mode: str, files_json: Path, out: Path, budget_mb: int, rows_per_part: int) -> dict[str, Any]:
    # The 1-minute load average before the run: on a shared machine it says how much to trust a number.
    load = os.getloadavg()[0]
    from fraudrt.oracle._sort import SORT_PROCESS_ENV

    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--files",
            str(files_json),
            "--out",
            str(out),
            "--budget-mb",
            str(budget_mb),
            "--rows-per-part",
            str(rows_per_part),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **SORT_PROCESS_ENV},
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    result["budget_mb"] = budget_mb
    result["load_before"] = round(load, 2)
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--files")
    ap.add_argument("--out")
    ap.add_argument("--flows", type=int, default=5_000_000)
    ap.add_argument("--budget-mb", type=int, default=4096)
    ap.add_argument("--small-budget-mb", type=int, default=512)
    ap.add_argument("--rows-per-part", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", default="copy-polars,copy-duckdb,fraudrt,duckdb,fraudrt-spill,duckdb-spill")
    ap.add_argument("--sweep", default="", help="extra fraudrt runs at these budgets (MB), e.g. 256,512,1024")
    ap.add_argument("--work", default="/tmp/fraudrt-bench-oracle")
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args()
    if args.child:
        files = json.loads(Path(args.files).read_text())
        print(json.dumps(child(args.child, files, Path(args.out), args.budget_mb, args.rows_per_part)))
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = ensure_world(work, args.flows)
    files_json = work / "files.json"
    files_json.write_text(json.dumps(files))
    size_mib = sum(Path(f).stat().st_size for f in files) / 2**20
    modes = args.modes.split(",")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for i in range(args.repeat):
        for mode in modes:
            budget = args.small_budget_mb if mode.endswith("-spill") else args.budget_mb
            r = run_child(mode, files_json, work / "out", budget, args.rows_per_part)
            runs[mode].append(r)
            print(
                f"[{i + 1}/{args.repeat}] {mode:14} {r['seconds']:7.2f}s {r['rows'] / r['seconds'] / 1e6:6.2f} Mrows/s"
                f" cpu {r['cpu_s']:6.1f}s rss {r['peak_rss_mib']:6} MiB load {r['load_before']:4.1f}"
                f" {r.get('strategy', '')}",
                file=sys.stderr,
            )
    for budget in [int(b) for b in args.sweep.split(",") if b]:
        # RSS against budget: the same sort at several budgets (each a separate process).
        mode = f"fraudrt@{budget}"
        modes.append(mode)
        r = run_child("fraudrt", files_json, work / "out", budget, args.rows_per_part)
        r["mode"] = mode
        runs[mode] = [r]
        print(
            f"[sweep] {mode:14} {r['seconds']:7.2f}s rss {r['peak_rss_mib']:6} MiB {r.get('strategy', '')}",
            file=sys.stderr,
        )
    summary = []
    for mode in modes:
        secs = statistics.median(r["seconds"] for r in runs[mode])
        rows = runs[mode][0]["rows"]
        summary.append(
            {
                "mode": mode,
                "rows": rows,
                "budget_mb": runs[mode][0]["budget_mb"],
                "median_s": round(secs, 2),
                "min_s": round(min(r["seconds"] for r in runs[mode]), 2),
                "max_s": round(max(r["seconds"] for r in runs[mode]), 2),
                "mrows_per_s": round(rows / secs / 1e6, 3),
                "cpu_s": statistics.median(r["cpu_s"] for r in runs[mode]),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[mode]),
                "load_before": [r["load_before"] for r in runs[mode]],
                **{k: runs[mode][0][k] for k in ("strategy", "units", "spill_mib") if k in runs[mode][0]},
            }
        )
    doc = {
        "machine": machine(),
        "input_files": len(files),
        "input_mib": round(size_mib),
        "runs": summary,
        "all_runs": runs,
    }
    print("| mode | budget MB | rows | median s (min-max) | M rows/s | CPU s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for s in summary:
        print(
            f"| {s['mode']} | {s['budget_mb']} | {s['rows']:,} | {s['median_s']} ({s['min_s']}-{s['max_s']}) |"
            f" {s['mrows_per_s']} | {s['cpu_s']} | {s['peak_rss_mib']} |"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc["machine"]))


if __name__ == "__main__":
    main()
