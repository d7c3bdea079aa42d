"""Batch jobs: the stream sort runs as its own OS process, submitted and watched from the CLI.

``<settings.home>/jobs/<job_id>/`` holds ``request.json`` (the frozen job input), ``status.json``
(written atomically by the job: state, progress, per-output results, error) and ``job.log`` (the
job's stdout/stderr). The submitter never trusts a RUNNING status alone: it also checks that the PID
is alive and is the same process (create time), so a job killed with -9 shows as FAILED/JOB_DIED.

One stream sort per engine root at a time (two would delete each other's half-built views, and could
leave a receipt without its manifest): the submitter takes an exclusive ``flock`` on
``jobs/locks/<sha256(root)>.lock`` before it looks for running jobs, and hands the locked descriptor
to the job process, which holds it until it exits (however it exits: the kernel drops the lock of a
process killed with -9). A second submission finds the lock taken and is refused at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import psutil

from fraudrt.config import Settings
from fraudrt.contracts import utc_now_ts, write_json_atomic

from ._errors import OracleError
from ._sort import SORT_PROCESS_ENV
from ._store import parse_engine_root
from ._stream_sort import StreamSortRequest

JobState = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED"]
TERMINAL: tuple[str, ...] = ("SUCCEEDED", "FAILED")


class JobRequest(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    kind: Literal["stream_sort"]
    profile: str | None
    stream_sort: StreamSortRequest


class JobStatus(msgspec.Struct, kw_only=True):
    job_id: str
    kind: str
    state: JobState
    pid: int | None = None
    pid_create_time: float | None = None
    created_at_utc: str = ""
    started_at_utc: str | None = None
    updated_at_utc: str = ""
    finished_at_utc: str | None = None
    progress: dict[str, Any] = msgspec.field(default_factory=dict)
    outputs: list[dict[str, Any]] = msgspec.field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    engine_run_root: str = ""
    log_path: str = ""


def jobs_dir(settings: Settings) -> Path:
    return Path(settings.home) / "jobs"


def job_dir(settings: Settings, job_id: str) -> Path:
    return jobs_dir(settings) / job_id


def new_job_id(kind: str) -> str:
    return f"{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def write_status(directory: Path, status: JobStatus) -> None:
    status.updated_at_utc = utc_now_ts()
    write_json_atomic(directory / "status.json", status)


def _alive(pid: int | None, create_time: float | None) -> bool:
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return False  # the PID was reused by another process
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def read_status(directory: Path) -> JobStatus:
    path = directory / "status.json"
    if not path.is_file():
        raise OracleError("JOB_UNKNOWN", f"no job status at {path}")
    status = msgspec.json.decode(path.read_bytes(), type=JobStatus)
    submitter = directory / "submitter.json"
    if status.pid is None and submitter.is_file():
        spawned = msgspec.json.decode(submitter.read_bytes())
        status.pid, status.pid_create_time = spawned.get("pid"), spawned.get("pid_create_time")
    if status.state not in TERMINAL and status.pid is not None and not _alive(status.pid, status.pid_create_time):
        # The process is gone without writing a terminal state: killed, OOM, or crashed hard.
        status.state = "FAILED"
        status.error_code = status.error_code or "JOB_DIED"
        status.error_message = status.error_message or f"job process {status.pid} exited without finishing"
    return status


def job_status(settings: Settings, job_id: str) -> JobStatus:
    return read_status(job_dir(settings, job_id))


def list_jobs(settings: Settings) -> list[JobStatus]:
    base = jobs_dir(settings)
    out = []
    for d in sorted(base.glob("*/status.json")) if base.is_dir() else []:
        try:
            out.append(read_status(d.parent))
        except (OracleError, msgspec.DecodeError):
            continue
    return out


def _running_conflicts(settings: Settings, request: StreamSortRequest) -> list[str]:
    return [
        s.job_id
        for s in list_jobs(settings)
        if s.kind == "stream_sort" and s.state not in TERMINAL and s.engine_run_root == request.engine_run_root
    ]


def _root_lock(settings: Settings, engine_run_root: str) -> int:
    """An open descriptor holding the root's exclusive lock; raises JOB_ALREADY_RUNNING if it is taken."""
    locks = jobs_dir(settings) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(engine_run_root.encode()).hexdigest()[:32]
    fd = os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return -1
    return fd


def submit_stream_sort(settings: Settings, request: StreamSortRequest, *, env: Mapping[str, str] | None = None) -> str:
    """Start the job process detached from this one; return its job id at once."""
    # One spelling per world, so the running-job guard and the job itself agree on what a root is.
    request = msgspec.structs.replace(request, engine_run_root=parse_engine_root(request.engine_run_root, settings).uri)
    lock = _root_lock(settings, request.engine_run_root)
    try:
        busy = _running_conflicts(settings, request)
        if lock < 0 or busy:
            # Two sorts of one world would delete each other's half-built views.
            raise OracleError(
                "JOB_ALREADY_RUNNING", f"stream sort of {request.engine_run_root} already running: {busy or 'a job'}"
            )
        return _spawn(settings, request, env, lock)
    finally:
        if lock >= 0:
            os.close(lock)  # the job process holds its own copy of the locked descriptor until it exits


def _spawn(settings: Settings, request: StreamSortRequest, env: Mapping[str, str] | None, lock: int) -> str:
    job_id = new_job_id("stream_sort")
    directory = job_dir(settings, job_id)
    directory.mkdir(parents=True, exist_ok=False)
    job = JobRequest(job_id=job_id, kind="stream_sort", profile=settings.profile, stream_sort=request)
    (directory / "request.json").write_bytes(msgspec.json.encode(job))
    log_path = directory / "job.log"
    status = JobStatus(
        job_id=job_id,
        kind="stream_sort",
        state="PENDING",
        created_at_utc=utc_now_ts(),
        engine_run_root=request.engine_run_root,
        log_path=str(log_path),
    )
    write_status(directory, status)
    child_env = dict(os.environ if env is None else env)
    # The job must see the same settings: same profile and the same home (where status goes).
    child_env["FRAUDRT_PROFILE"] = settings.profile
    child_env.setdefault("FRAUDRT_HOME", settings.home)
    for name, value in SORT_PROCESS_ENV.items():  # allocator settings the memory budget relies on
        child_env.setdefault(name, value)
    try:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fraudrt.oracle.job_main", str(directory)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                pass_fds=(lock,),  # the root's lock, held by the job for its whole life
                start_new_session=True,  # a Ctrl-C of a waiting CLI does not kill a detached job
            )
    except OSError as exc:
        status.state, status.error_code, status.error_message = "FAILED", "JOB_SPAWN_FAILED", str(exc)
        write_status(directory, status)
        raise OracleError("JOB_SPAWN_FAILED", f"could not start the job process: {exc}") from exc
    try:
        create_time: float | None = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = None
    # status.json belongs to the job from here on; the submitter records the PID beside it so a job
    # that dies before its first status write is still detected.
    write_json_atomic(directory / "submitter.json", {"pid": proc.pid, "pid_create_time": create_time})
    return job_id


def wait_for_job(
    settings: Settings,
    job_id: str,
    on_update: Callable[[JobStatus], None] | None = None,
    *,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
) -> JobStatus:
    deadline = None if timeout is None else time.monotonic() + timeout
    last = ""
    directory = job_dir(settings, job_id)
    # A job killed before writing its own PID is caught via the PID the submitter recorded.
    while True:
        status = read_status(directory)
        stamp = status.updated_at_utc + status.state
        if on_update is not None and stamp != last:
            on_update(status)
            last = stamp
        if status.state in TERMINAL:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise OracleError("JOB_TIMEOUT", f"job {job_id} still {status.state} after {timeout}s")
        time.sleep(poll_seconds)
