"""`--memory-mb` bounds the sort process's peak resident memory, not just its data structures.

The sort runs in a child process started the way the job starts (SORT_PROCESS_ENV); the child reports
its own peak (VmHWM, which exec resets: the parent's memory does not leak into the number). The input
is big enough that the budget forces the external path, with parts (1 M rows) larger than a sorted
unit, so parts span units: the case where a carried slice used to pin whole units.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from fraudrt.oracle._sort import SORT_PROCESS_ENV

pytestmark = pytest.mark.integration

ROWS = 4_000_000
BUDGET_MB = 448

_CHILD = """
import json, sys
from pathlib import Path
from fraudrt.oracle import SortConfig, SourceFile, sort_sources
src, out, work, budget = sys.argv[1:5]
files = sorted(Path(src).glob("part-*.parquet"))
stats = sort_sources(
    [SourceFile(path=str(f), name=f.name) for f in files],
    Path(out),
    SortConfig(work_dir=work, memory_budget_bytes=int(budget) << 20, rows_per_part=1_000_000),
    lambda _part: None,
)
hwm_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"peak_bytes": hwm_kib * 1024, "strategy": stats.strategy, "units": stats.units,
                  "unit_rows": getattr(stats, "unit_rows", None), "max_unit_rows": stats.max_unit_rows,
                  "rows": stats.rows_out}))
"""


def _world(directory: Path) -> None:
    """Four files of 1 M rows shaped like the fraud event stream, in no time order."""
    idx = pl.int_range(0, ROWS, eager=True)
    df = pl.DataFrame({"idx": idx}).select(
        flow_id=pl.col("idx") * 7919,
        event_seq=pl.col("idx") % 2,
        event_type=pl.when(pl.col("idx") % 2 == 0).then(pl.lit("AUTH_REQUEST")).otherwise(pl.lit("AUTH_RESPONSE")),
        ts_utc=pl.from_epoch(1_767_225_600_000_000 + pl.col("idx").hash(11) % 86_400_000_000, time_unit="us")
        .dt.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"),
        amount=(pl.col("idx") % 10_000).cast(pl.Float64) / 100,
        seed=pl.lit(42, dtype=pl.Int64),
        manifest_fingerprint=pl.lit("ab" * 32),
        parameter_hash=pl.lit("cd" * 32),
        scenario_id=pl.lit("baseline_v1"),
    )
    directory.mkdir(parents=True)
    for i in range(4):
        df.slice(i * ROWS // 4, ROWS // 4).write_parquet(directory / f"part-{i:05d}.parquet", row_group_size=131_072)


def test_the_memory_budget_bounds_the_whole_sort_process(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _world(src)
    env = {**os.environ, **SORT_PROCESS_ENV}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), str(out), str(tmp_path / "work"), str(BUDGET_MB)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rows"] == ROWS and result["strategy"] == "external"
    peak_mib = result["peak_bytes"] / 2**20
    assert peak_mib <= BUDGET_MB, f"the sort process peaked at {peak_mib:.0f} MiB with --memory-mb {BUDGET_MB}"
    assert result["max_unit_rows"] <= result["unit_rows"] < 1_000_000  # parts span units

    parts = sorted(out.glob("part-*.parquet"))
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == [1_000_000] * 4
    # Row groups of exactly 131 072 rows inside a part, the part's last one shorter.
    sizes = [pq.ParquetFile(parts[1]).metadata.row_group(i).num_rows for i in range(8)]
    assert sizes == [131_072] * 7 + [1_000_000 - 7 * 131_072]
    ts = pl.scan_parquet(parts).select("ts_utc").collect()["ts_utc"]
    assert ts.is_sorted()
