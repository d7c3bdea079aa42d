"""Detached OS processes we start and later stop by PID: the substrate's servers and the pack processes.

A recorded PID is only trusted together with the process create time, so a PID the kernel has
reused for an unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec
import psutil


class ProcessRecord(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    create_time: float
    argv: list[str]
    log_path: str


def spawn_detached(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> ProcessRecord:
    """Start `argv` in its own session, stdout+stderr appended to `log_path`; it outlives the caller."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = list(argv)
    if user is not None:
        # runuser keeps the environment we pass and drops root (initdb/postgres refuse to run as root).
        command = ["runuser", "-u", user, "--", *command]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            close_fds=True,
        )
    return ProcessRecord(pid=proc.pid, create_time=_create_time(proc.pid) or time.time(), argv=command,
                         log_path=str(log_path))


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_alive(record: ProcessRecord) -> bool:
    """True only if the PID is running AND is the process we started (same create time)."""
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(float(proc.create_time()) - record.create_time) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _reap(pid: int) -> None:
    # Our own children become zombies until waited for; reap so `is_alive` turns false.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop(record: ProcessRecord, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> str:
    """Signal the process (its whole session), wait, then SIGKILL. Returns how it ended."""
    if not is_alive(record):
        return "not-running"
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        return "not-running"
    except PermissionError:
        os.kill(record.pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_alive(record):
            return "stopped"
        time.sleep(0.05)
    kill(record)
    return "killed"


def kill(record: ProcessRecord) -> None:
    """SIGKILL the process group now (crash tests, and the fallback of `stop`)."""
    if not is_alive(record):
        return
    try:
        os.killpg(record.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and is_alive(record):
        _reap(record.pid)
        time.sleep(0.02)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def tail(path: Path | str, lines: int = 30) -> str:
    try:
        data = Path(path).read_bytes()[-16384:]
    except OSError:
        return "(no log)"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
