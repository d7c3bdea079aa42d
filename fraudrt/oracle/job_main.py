"""Entry point of an oracle job process: ``python -m fraudrt.oracle.job_main <job_dir>``.

Reads ``request.json``, runs the job, keeps ``status.json`` current (at most every half second, plus
every phase change) and always ends with a terminal state; the exit status is 0 only on success.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import anyio
import msgspec
import psutil

from fraudrt.config import load_settings
from fraudrt.contracts import utc_now_ts

from ._errors import OracleError
from ._jobs import JobRequest, JobStatus, read_status, write_status
from ._stream_sort import stream_sort

log = logging.getLogger("fraudrt.oracle.job")


def run(directory: Path) -> int:
    job = msgspec.json.decode((directory / "request.json").read_bytes(), type=JobRequest)
    status = read_status(directory)
    status.state = "RUNNING"
    status.pid = os.getpid()
    status.pid_create_time = psutil.Process().create_time()
    status.started_at_utc = utc_now_ts()
    write_status(directory, status)
    last_write = 0.0
    last_phase: tuple[Any, ...] = ()

    def on_progress(p: dict[str, Any]) -> None:
        nonlocal last_write, last_phase
        status.progress = p
        phase = (p.get("output_id"), p.get("phase"))
        now = time.monotonic()
        if phase != last_phase:
            log.info("progress %s", p)
        if phase != last_phase or now - last_write >= 0.5:
            write_status(directory, status)
            last_write, last_phase = now, phase

    try:
        settings = load_settings(job.profile)
        log.info("job %s start: %s", job.job_id, msgspec.json.encode(job.stream_sort).decode())
        results = anyio.run(stream_sort, settings, job.stream_sort, on_progress)
        status.outputs = [msgspec.to_builtins(r) for r in results]
        status.state = "SUCCEEDED"
        log.info("job %s done: %s", job.job_id, status.outputs)
        code = 0
    except OracleError as exc:
        status.state, status.error_code, status.error_message = "FAILED", exc.code, exc.message
        log.error("job %s failed: %s", job.job_id, exc)
        code = 1
    except BaseException as exc:
        status.state, status.error_code, status.error_message = "FAILED", "JOB_CRASHED", repr(exc)
        log.error("job %s crashed:\n%s", job.job_id, traceback.format_exc())
        code = 2
    status.finished_at_utc = utc_now_ts()
    write_status(directory, status)
    return code


def _status_exists(directory: Path) -> JobStatus | None:
    try:
        return read_status(directory)
    except OracleError:
        return None


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stdout)
    if len(sys.argv) != 2:
        print("usage: python -m fraudrt.oracle.job_main <job_dir>", file=sys.stderr)
        sys.exit(64)
    directory = Path(sys.argv[1])
    if _status_exists(directory) is None:
        print(f"no job at {directory}", file=sys.stderr)
        sys.exit(64)
    sys.exit(run(directory))


if __name__ == "__main__":
    main()
