"""The stream-sort job as the CLI runs it: its own OS process, status files, the one-job-per-root rule.

These jobs sort a local engine root (no object store needed): what is under test is the job process
and its submission, which are the same for S3 roots.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psutil
import pytest

from fraudrt.config import Settings, load_settings, project_root
from fraudrt.engine import GenerateRequest, generate_world
from fraudrt.oracle import (
    OracleError,
    StreamSortRequest,
    job_status,
    submit_stream_sort,
    wait_for_job,
)
from fraudrt.oracle import _jobs as jobs

pytestmark = pytest.mark.integration

SCENARIO = "baseline_v1"
OUT = "s3_event_stream_with_fraud_6B"
FAULTS = project_root() / "tests" / "support" / "oracle_faults"


@pytest.fixture(scope="module")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("jobs-world")
    root = Path(generate_world(GenerateRequest(out_dir=str(out), n_flows=6_000, seed=21)).engine_run_root)
    # One source file of exactly three row groups: one frame in the sort's hands, two read ahead.
    files = sorted(root.glob(f"data/layer3/6B/{OUT}/**/part-*.parquet"))
    df = pl.concat([pl.read_parquet(f) for f in files])
    for f in files:
        f.unlink()
    df.write_parquet(files[0], row_group_size=math.ceil(df.height / 3))
    return root


@pytest.fixture
def world(world_template: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "world" / world_template.name
    shutil.copytree(world_template, target)
    return target


@pytest.fixture
def job_settings(tmp_path: Path) -> Settings:
    return load_settings("embedded", env={**os.environ, "FRAUDRT_HOME": str(tmp_path / "home")})


@pytest.fixture
def started() -> Iterator[list[tuple[Settings, str]]]:
    """Jobs a test submitted; any still alive at the end are stopped by their own PID."""
    ids: list[tuple[Settings, str]] = []
    yield ids
    for settings, job_id in ids:
        status = job_status(settings, job_id)
        if status.state not in ("SUCCEEDED", "FAILED") and status.pid is not None:
            try:
                proc = psutil.Process(status.pid)
                if status.pid_create_time is None or abs(proc.create_time() - status.pid_create_time) < 1.0:
                    proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass


def _request(world: Path, **kw: object) -> StreamSortRequest:
    return StreamSortRequest(
        engine_run_root=str(world), scenario_id=SCENARIO, output_ids=(OUT,), rows_per_part=1_000, **kw  # type: ignore[arg-type]
    )


def _view(world: Path) -> Path:
    return world / "stream_view" / "ts_utc" / f"output_id={OUT}"


def test_a_failed_spill_write_ends_the_job_failed_and_the_next_sort_runs(
    world: Path, job_settings: Settings, started: list[tuple[Settings, str]]
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]),
        "FRAUDRT_TEST_ORACLE_FAULT": "spill_enospc",
    }
    job_id = submit_stream_sort(job_settings, _request(world, force_external=True, memory_mb=64), env=env)
    started.append((job_settings, job_id))
    status = wait_for_job(job_settings, job_id, timeout=120)  # it fails in about a second; a hang is the bug
    assert status.state == "FAILED", status
    assert status.error_code == "SPILL_WRITE_FAILED", status
    assert "No space left on device" in (status.error_message or "") and "--work-dir" in (status.error_message or "")
    assert status.pid is not None
    deadline = time.monotonic() + 30
    while jobs._alive(status.pid, status.pid_create_time):  # the process itself ends, not only its status
        assert time.monotonic() < deadline, f"job process {status.pid} still alive after reporting FAILED"
        time.sleep(0.1)
    assert not (_view(world) / "_stream_sort_receipt.json").exists()

    # The root is free again: the next sort runs to the end.
    again = submit_stream_sort(job_settings, _request(world, force_external=True, memory_mb=64))
    started.append((job_settings, again))
    done = wait_for_job(job_settings, again, timeout=240)
    assert done.state == "SUCCEEDED", done
    assert done.outputs[0]["rows"] == 12_000 and (_view(world) / "_stream_sort_receipt.json").is_file()


def test_two_concurrent_submissions_for_one_root_start_one_job(
    world: Path, job_settings: Settings, started: list[tuple[Settings, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both submitters look for running jobs before either has started one: the window a
    # check-then-spawn guard leaves open, held open here so the race is certain, not lucky.
    both_looked = threading.Barrier(2, timeout=5)
    look = jobs._running_conflicts

    def look_then_wait(settings: Settings, request: StreamSortRequest) -> list[str]:
        busy = look(settings, request)
        with contextlib.suppress(threading.BrokenBarrierError):  # the other submitter never got this far
            both_looked.wait()
        return busy

    monkeypatch.setattr(jobs, "_running_conflicts", look_then_wait)
    accepted: list[str] = []
    refused: list[OracleError] = []

    def submit() -> None:
        try:
            accepted.append(submit_stream_sort(job_settings, _request(world)))
        except OracleError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    started.extend((job_settings, j) for j in accepted)
    assert len(accepted) == 1, f"{len(accepted)} jobs started for one root: {accepted}"
    assert [e.code for e in refused] == ["JOB_ALREADY_RUNNING"]

    done = wait_for_job(job_settings, accepted[0], timeout=240)
    assert done.state == "SUCCEEDED", done
    assert (_view(world) / "_stream_sort_receipt.json").is_file()
    assert (_view(world) / "_stream_view_manifest.json").is_file()
    # The job's exit released the root: the next submission is accepted (and finds the view built).
    monkeypatch.setattr(jobs, "_running_conflicts", look)
    deadline = time.monotonic() + 30
    while jobs._alive(done.pid, done.pid_create_time):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    rerun = submit_stream_sort(job_settings, _request(world))
    started.append((job_settings, rerun))
    assert wait_for_job(job_settings, rerun, timeout=240).outputs[0]["status"] == "SKIPPED"
