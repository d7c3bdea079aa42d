"""`pack up|status|down` through real detached pack processes on the embedded substrate."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support: imported here and by pack processes

from fraudrt._daemon import is_alive
from fraudrt.contracts import health_path
from fraudrt.runtime.packs import (
    PackError,
    load_pack_state,
    new_run,
    pack_down,
    pack_run_dir,
    pack_status,
    pack_up,
    resolve_manifest,
)
from fraudrt.substrate import bootstrap
from tests.support.harness import (
    TEST_PACKS_DIR,
    create_streams,
    kill_pack,
    make_scope,
    read_events,
    wait_for,
)

pytestmark = pytest.mark.e2e

CORE = "local_parity_rtdl_core_v0"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fraudrt", *args], env=env, cwd=project_root(),
                          capture_output=True, text=True, timeout=120)


async def test_rtdl_core_up_status_up_again_refuses_new_run_down_drains(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLATFORM_RUN_ID", raising=False)
    monkeypatch.delenv("FRAUDRT_PACKS_DIR", raising=False)
    scope = make_scope(substrate, tmp_path / "runs")
    settings, env = scope.settings, scope.env
    await bootstrap(settings)
    run = new_run(settings, datetime(2030, 5, 17, 8, 30, 12, tzinfo=UTC))
    assert run == "platform_20300517T083012Z"
    try:
        started = await anyio.to_thread.run_sync(lambda: pack_up(settings, "rtdl_core", env=env))
        assert started["state"] == "started" and started["platform_run_id"] == run

        async def status() -> dict[str, Any]:
            return pack_status(settings, "rtdl_core")

        def all_green(s: dict[str, Any]) -> bool:
            comps = s["components"].values()
            return bool(comps) and all(c["health_state"] == "GREEN" and c["running"] for c in comps)

        # The first status file can predate the component tasks (running=False for one report interval).
        report = await wait_for(status, all_green, what="every component running and GREEN")
        assert report["state"] == "running" and report["pid"] == started["pid"]
        assert report["platform_run_id"] == run
        # Every actor of the manifest is built: all of them run, none is reported missing.
        assert set(report["components"]) == {s.name for s in resolve_manifest("rtdl_core").components}
        assert report["missing_optional"] == []
        assert report["missing"] == []
        health = json.loads(health_path(Path(settings.runs_root), run, "archive_writer").read_text())
        assert health["health_state"] == "GREEN" and health["platform_run_id"] == run

        cli_status = _cli(env, "pack", "status", "rtdl_core", "--json")
        assert cli_status.returncode == 0, cli_status.stderr
        assert json.loads(cli_status.stdout)["pid"] == started["pid"]

        again = await anyio.to_thread.run_sync(lambda: pack_up(settings, "rtdl_core", env=env))
        assert again["state"] == "already-running" and again["pid"] == started["pid"]

        # A new active run: the pack still runs for the old one, so `up` refuses and says why.
        newer = new_run(settings, datetime(2030, 5, 17, 9, 0, 0, tzinfo=UTC))
        with pytest.raises(PackError) as refused:
            pack_up(settings, "rtdl_core", env=env)
        message = str(refused.value)
        assert run in message and newer in message and "pack down rtdl_core" in message
        cli_up = _cli(env, "pack", "up", "rtdl_core")
        assert cli_up.returncode != 0
        assert run in cli_up.stderr and newer in cli_up.stderr
        assert is_alive(load_pack_state(settings, CORE).process), "a refused `up` leaves the pack running"  # type: ignore[union-attr]

        stopped = await anyio.to_thread.run_sync(lambda: pack_down(settings, "rtdl_core", timeout=30))
        assert stopped["state"] == "stopped", "drained within the timeout, not SIGKILLed"
        events = [e["event"] for e in read_events(pack_run_dir(settings, run, CORE) / "events.jsonl")]
        assert events[0] == "pack_started"
        assert "drain_started" in events and events[-1] == "pack_stopped"
        assert events.index("drain_started") < events.index("pack_stopped")
        final = pack_status(settings, "rtdl_core")
        assert final["state"] == "stopped"
        cli_final = _cli(env, "pack", "status", "rtdl_core", "--json")
        assert cli_final.returncode == 1 and json.loads(cli_final.stdout)["state"] == "stopped"
    finally:
        kill_pack(settings, CORE)


async def test_a_required_missing_actor_blocks_start_an_optional_one_does_not(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Test-only manifests, so the outcome does not depend on which real actors are built yet.
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", str(TEST_PACKS_DIR))
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    settings = scope.settings
    with pytest.raises(PackError) as refused:
        pack_up(settings, "test_missing", platform_run_id=scope.run_id, env=scope.env)
    assert "test_phantom" in str(refused.value) and "tests.support.no_such_module" in str(refused.value)
    assert "test_recorder:" not in str(refused.value)

    await create_streams(settings, ["traffic_fraud"])
    try:
        started = await anyio.to_thread.run_sync(
            lambda: pack_up(settings, "test_optional", platform_run_id=scope.run_id, env=scope.env))
        assert started["state"] == "started"
        assert [m.split(":")[0] for m in started["missing_optional"]] == ["test_ghost"]

        async def status() -> dict[str, Any]:
            return pack_status(settings, "test_optional")

        report = await wait_for(status, lambda s: "test_recorder" in s["components"], what="status")
        assert report["state"] == "running"
        assert set(report["components"]) == {"test_recorder"}
        assert [m.split(":")[0] for m in report["missing_optional"]] == ["test_ghost"]
        assert report["missing"] == []
    finally:
        kill_pack(settings, "test_optional_v0")
