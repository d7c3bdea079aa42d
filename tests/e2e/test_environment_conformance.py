"""Environment conformance checks the running platform, not files: real pack processes (IG + WSP,
and a recorder) on the embedded substrate. All checks PASS on a healthy run; then each way the
environment can drift turns exactly the check that should see it to FAIL, with a reason that names
the place and never the secret itself."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.obs_gov import governance
from fraudrt.obs_gov.environment_conformance import conformance_path, run_conformance
from fraudrt.runtime.packs import pack_down, pack_up, run_dir
from fraudrt.substrate import bootstrap
from tests.support.harness import TEST_PACKS_DIR, kill_pack, make_scope

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _statuses(report: Any) -> dict[str, str]:
    return {c.check_id: c.status for c in report.checks}


async def test_conformance_passes_live_then_fails_precisely_on_a_secret_a_config_drift_and_a_dead_pack(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packs = tmp_path / "packs"
    packs.mkdir()
    shutil.copy(project_root() / "packs" / "local_parity_control_ingress_v0.yaml", packs)
    shutil.copy(TEST_PACKS_DIR / "test_recorder_v0.yaml", packs)
    port = _free_port()
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", str(packs))
    monkeypatch.setenv("IG_PORT", str(port))
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    env = {**scope.env, "FRAUDRT_PACKS_DIR": str(packs), "IG_PORT": str(port)}
    settings = substrate.settings_for(FRAUDRT_STREAM_PREFIX=scope.prefix, FRAUDRT_RUNS_ROOT=str(tmp_path / "runs"),
                                      IG_PORT=str(port))
    await bootstrap(settings)
    run = scope.run_id
    try:
        for name in ("control_ingress", "test_recorder"):
            await anyio.to_thread.run_sync(lambda n=name: pack_up(settings, n, platform_run_id=run, env=env))

        report, path = await run_conformance(settings, run)
        assert report.status == "PASS", [c for c in report.checks if c.status != "PASS"]
        assert set(_statuses(report)) == {"endpoints_reachable", "buckets_as_configured", "streams_as_configured",
                                          "packs_alive_on_run", "config_digests_consistent", "ig_auth_enforced",
                                          "loopback_only", "no_secrets_in_artifacts"}
        checks = {c.check_id: c for c in report.checks}
        assert checks["ig_auth_enforced"].details["statuses"]["push_without_key"] == 401
        assert checks["loopback_only"].details["listening"]["substrate postgres"], "real sockets were looked at"
        assert path == conformance_path(settings, run) and json.loads(path.read_text())["status"] == "PASS"

        # A DSN password lands in a run artifact: the scan names the file and the kind, not the value.
        assert settings.postgres.dsn
        leak = run_dir(settings, run) / "test_recorder" / "debug.txt"
        leak.parent.mkdir(parents=True, exist_ok=True)
        leak.write_text(f"connecting to {settings.postgres.dsn}\n")
        report, path = await run_conformance(settings, run)
        assert _statuses(report)["no_secrets_in_artifacts"] == "FAIL"
        assert report.status == "FAIL"
        reasons = next(c.reasons for c in report.checks if c.check_id == "no_secrets_in_artifacts")
        assert any("postgres_password" in r and str(leak) in r for r in reasons), reasons
        password = settings.postgres.dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        assert password not in path.read_text()
        leak.unlink()

        # A pack restarted with other configuration than the rest: the digests disagree.
        await anyio.to_thread.run_sync(lambda: pack_down(settings, "test_recorder", timeout=30))
        drifted = {**env, "WSP_MAX_EVENTS_PER_OUTPUT": "7"}
        await anyio.to_thread.run_sync(lambda: pack_up(settings, "test_recorder", platform_run_id=run, env=drifted))
        report, _ = await run_conformance(settings, run)
        statuses = _statuses(report)
        assert statuses["config_digests_consistent"] == "FAIL" and statuses["no_secrets_in_artifacts"] == "PASS"
        reasons = next(c.reasons for c in report.checks if c.check_id == "config_digests_consistent")
        assert any(r.startswith("test_recorder_v0:") for r in reasons), reasons

        # A pack that died: not alive on the run.
        kill_pack(settings, "test_recorder_v0")
        report, _ = await run_conformance(settings, run)
        reasons = next(c.reasons for c in report.checks if c.check_id == "packs_alive_on_run")
        assert any(r.startswith("test_recorder_v0: not running") for r in reasons), reasons

        # Each change of outcome is one governance event; the same outcome again is not a new one.
        events = await governance.query(settings, run, family="CONFORMANCE_RESULT")
        assert [e.details["status"] for e in events] == ["PASS", "FAIL", "FAIL", "FAIL"]
        await run_conformance(settings, run)
        assert len(await governance.query(settings, run, family="CONFORMANCE_RESULT")) == 4
    finally:
        kill_pack(settings, "test_recorder_v0")
        kill_pack(settings, "local_parity_control_ingress_v0")
