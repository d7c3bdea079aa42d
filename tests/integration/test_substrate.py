"""The embedded substrate: idempotent `up` and `bootstrap`, the CLI status, and `down` by PID."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from fraudrt._daemon import is_alive, port_in_use
from fraudrt.config import load_settings, project_root
from fraudrt.substrate import bootstrap, down, load_state, state_dir, status, up

pytestmark = pytest.mark.integration


def _pids(settings: Any) -> dict[str, tuple[int, float]]:
    return {name: (svc.process.pid, svc.process.create_time) for name, svc in load_state(settings).services.items()}


async def test_up_again_reuses_the_running_servers(substrate: Any) -> None:
    before = _pids(substrate.settings)
    assert set(before) == {"postgres", "kinesis", "s3"}
    endpoints_file = Path(substrate.settings.home) / "substrate" / "endpoints.json"
    endpoints = endpoints_file.read_text()
    messages: list[str] = []
    await up(substrate.settings, fast_pg=True, progress=messages.append)
    assert _pids(substrate.settings) == before, "same PIDs (and create times): nothing was restarted"
    assert sum("already running" in m for m in messages) == 3, messages
    assert endpoints_file.read_text() == endpoints
    for pid, create_time in before.values():
        assert psutil.Process(pid).create_time() == pytest.approx(create_time, abs=1.0)


async def test_bootstrap_twice_creates_nothing_the_second_time(substrate: Any) -> None:
    fresh = substrate.settings_for(FRAUDRT_STREAM_PREFIX=f"boot{os.getpid()}{time.monotonic_ns() % 10**6}-")
    first = await bootstrap(fresh)
    assert sorted(first["created"]["streams"]) == sorted(fresh.streams.all_names())
    assert len(first["created"]["streams"]) == 10
    second = await bootstrap(fresh)
    assert second["created"] == {"buckets": [], "streams": []}
    assert second["streams"] == first["streams"]
    # The session's own bootstrap already made the buckets and the unprefixed streams.
    again = await bootstrap(substrate.settings)
    assert again["created"] == {"buckets": [], "streams": []}


def _secrets(home: Path) -> list[str]:
    creds = json.loads((home / "substrate" / "credentials.json").read_text())
    found = [creds["postgres"]["password"], creds["s3"]["secret_access_key"]]
    assert all(len(s) >= 16 for s in found)
    return found


def test_cli_status_json_reports_every_service_healthy_and_no_secret(substrate: Any) -> None:
    env = {**os.environ, **substrate.env}
    proc = subprocess.run([sys.executable, "-m", "fraudrt", "substrate", "status", "--json"],
                          env=env, cwd=project_root(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["healthy"] is True
    assert set(report["services"]) == {"postgres", "kinesis", "s3"}
    pids = _pids(substrate.settings)
    for name, svc in report["services"].items():
        assert svc["state"] == "running" and svc["alive"] and svc["answering"], (name, svc)
        assert svc["pid"] == pids[name][0]
    output = proc.stdout + proc.stderr
    for secret in _secrets(substrate.home):
        assert secret not in output, "status printed a secret"
    # The plain-text form too.
    plain = subprocess.run([sys.executable, "-m", "fraudrt", "substrate", "status"],
                           env=env, cwd=project_root(), capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0
    for secret in _secrets(substrate.home):
        assert secret not in plain.stdout + plain.stderr


async def test_a_second_substrate_in_another_home_comes_up_and_goes_down_by_pid(substrate: Any) -> None:
    # Its own FRAUDRT_HOME, so its state, ports and PIDs never touch the session's substrate.
    home = Path(tempfile.mkdtemp(prefix="fraudrt-test-down-"))
    os.chmod(home, 0o755)
    env = {**os.environ, "FRAUDRT_HOME": str(home), "FRAUDRT_RUNS_ROOT": str(home / "runs")}
    try:
        settings = load_settings("embedded", env=env)
        await up(settings, fast_pg=True)
        settings = load_settings("embedded", env=env)
        report = await status(settings)
        assert report["healthy"], report
        state = load_state(settings)
        ours = {svc.process.pid for svc in load_state(substrate.settings).services.values()}
        assert not ours & {svc.process.pid for svc in state.services.values()}
        ports = [p for svc in state.services.values() for p in svc.ports.values()]
        down(settings, purge=True)
        for svc in state.services.values():
            assert not is_alive(svc.process), f"{svc.name} still running"
        assert not any(port_in_use(p) for p in ports)
        assert not state_dir(settings).exists()
        assert not (await status(settings))["healthy"]
        # The session substrate is untouched.
        assert (await status(substrate.settings))["healthy"]
    finally:
        down(load_settings("embedded", env=env), purge=True)
        shutil.rmtree(home, ignore_errors=True)
