"""bench/bench_oracle.py reports each run's own peak memory, not its parent's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

from fraudrt.config import project_root

pytestmark = pytest.mark.integration


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_oracle", project_root() / "bench" / "bench_oracle.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_runs_peak_rss_is_its_own_not_the_benchmark_processs(tmp_path: Path) -> None:
    src = tmp_path / "a.parquet"
    pl.DataFrame({"ts_utc": ["2026-01-01T00:00:00.000000Z"] * 1_000, "v": range(1_000)}).write_parquet(src)
    files = tmp_path / "files.json"
    files.write_text(json.dumps([str(src)]))
    # The benchmark process holds a lot before it starts a run (as it does after generating a world):
    # Linux's ru_maxrss carries that high-water mark into every child it forks.
    ballast = bytearray(b"\x01") * (768 * 2**20)
    result = _bench().run_child("copy-polars", files, tmp_path / "out", 512, 1_000)
    assert len(ballast) and result["rows"] == 1_000
    assert 0 < result["peak_rss_mib"] < 512, result
