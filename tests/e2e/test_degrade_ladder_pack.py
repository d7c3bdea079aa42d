"""The Degrade Ladder and the Decision Fabric in a real pack process, behind a real rtdl_core pack.

Real signals end to end: the ladder reads the rtdl_core pack's own health and metrics files. While
the projectors run, the posture is NORMAL and every AUTH_REQUEST is decided on its full context, DF
GREEN. `kill -9` of the rtdl_core pack stops its reports; once they are stale the ladder goes to
FAIL_CLOSED (CSFB, the base context, is gone) and DF holds new requests for REVIEW without waiting for
context that cannot come. With rtdl_core back, the ladder returns to NORMAL after its quiet period.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
import yaml

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import decode_envelope, health_path
from fraudrt.engine import GenerateRequest, generate_world
from fraudrt.rtdl.decision_fabric import decisions_for
from fraudrt.rtdl.degrade_ladder import posture_history
from fraudrt.rtdl.policy import load_policy
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import pack_down, pack_up
from fraudrt.substrate import bootstrap
from tests.support.df_lane import CONTEXT, world_envelopes
from tests.support.harness import kill_pack, make_scope, put, wait_for

pytestmark = pytest.mark.e2e

CORE = "local_parity_rtdl_core_v0"
LANE = "test_decision_v0"


def _packs(tmp: Path, policy_path: Path) -> Path:
    """A packs dir with rtdl_core as shipped and a pack of the ladder and DF on a test policy."""
    packs = tmp / "packs"
    packs.mkdir()
    (packs / f"{CORE}.yaml").write_text((project_root() / "packs" / f"{CORE}.yaml").read_text())
    lane = yaml.safe_load((project_root() / "packs" / "local_parity_rtdl_decision_lane_v0.yaml").read_text())
    components = [c for c in lane["components"] if c["name"] in ("degrade_ladder", "decision_fabric")]
    for c in components:
        c.setdefault("options", {})["policy"] = str(policy_path)
    (packs / f"{LANE}.yaml").write_text(yaml.safe_dump({
        "pack_id": LANE, "short_name": "test_decision", "description": "DL + DF of the decision lane",
        "components": components, "runtime": {"health_interval_seconds": 0.5}}))
    return packs


def _policy(tmp: Path) -> Path:
    """The shipped decision policy with a short quiet period (and its bundles by absolute path)."""
    shipped = load_policy()
    doc = yaml.safe_load((Path(shipped.directory) / "decision_policy.yaml").read_text())
    doc["ladder"]["quiet_period_seconds"] = 3.0
    doc["bundles"] = {"model": str(shipped.bundle_path("model")), "rules_only": str(shipped.bundle_path("rules_only"))}
    path = tmp / "decision_policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return doc


async def test_posture_follows_the_projectors_pack_and_df_obeys_it(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packs = _packs(tmp_path, _policy(tmp_path))
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", str(packs))
    scope = make_scope(substrate, tmp_path / "runs")
    settings, run = scope.settings, scope.run_id
    env = {**scope.env, "FRAUDRT_PACKS_DIR": str(packs)}
    await bootstrap(settings)
    world = Path(generate_world(GenerateRequest(out_dir=str(tmp_path / "world"), seed=31, n_flows=300,
                                                fraud_rate=0.05, modes=("fraud",))).engine_run_root)
    envs = world_envelopes(world, run)
    requests = [d for d in envs["traffic_fraud"] if decode_envelope(d).payload["event_type"] == "AUTH_REQUEST"]
    first, held_back = requests[:-20], requests[-20:]
    runs_root = Path(settings.runs_root)
    conn = await asyncpg.connect(settings.postgres.dsn)
    try:
        await anyio.to_thread.run_sync(lambda: pack_up(settings, CORE, platform_run_id=run, env=env))
        await anyio.to_thread.run_sync(lambda: pack_up(settings, LANE, platform_run_id=run, env=env))
        async with KinesisBus(settings.kinesis) as bus:
            for logical in CONTEXT:
                await put(bus, settings.streams.name(logical), envs[logical])
            await put(bus, settings.streams.name("traffic_fraud"), first)

            async def decided() -> list[Any]:
                return await decisions_for(conn, run)

            rows = await wait_for(decided, lambda r: len(r) == len(first), timeout=120, what="the first requests")
            assert {(r.posture_mode, r.context_status) for r in rows} == {("NORMAL", "COMPLETE")}
            df_health = await wait_for(lambda: anyio.to_thread.run_sync(
                _read, health_path(runs_root, run, "decision_fabric")),
                lambda h: h is not None and h["health_state"] == "GREEN", timeout=30, what="DF GREEN")
            assert df_health is not None
            history = await posture_history(conn, run)
            assert [(c.mode, c.reason) for c in history] == [("NORMAL", "INITIAL")]

            # The projectors' pack dies: no more reports. Stale after 10 s -> FAIL_CLOSED.
            kill_pack(settings, CORE)
            history = await wait_for(lambda: posture_history(conn, run), lambda h: h[-1].mode == "FAIL_CLOSED",
                                     timeout=60, what="the ladder at FAIL_CLOSED")
            assert history[-1].reason == "DOWNSHIFT NORMAL->FAIL_CLOSED"
            assert any("context_store_flow_binding: REPORT_STALE" in r for r in history[-1].reasons)
            assert history[-1].signals["context_store_flow_binding"]["mode"] == "FAIL_CLOSED"

            await put(bus, settings.streams.name("traffic_fraud"), held_back)
            rows = await wait_for(decided, lambda r: len(r) == len(requests), timeout=60, what="the held-back ones")
            late = [r for r in rows if r.posture_mode == "FAIL_CLOSED"]
            assert len(late) == len(held_back)
            assert {(r.action, r.context_status) for r in late} == {("REVIEW", "COMPLETE")}
            assert max(r.waited_ms for r in late) < 5000.0  # decided without waiting for context
            lane_health = await wait_for(lambda: anyio.to_thread.run_sync(
                _read, health_path(runs_root, run, "degrade_ladder")),
                lambda h: h is not None and h["health_state"] == "RED", timeout=30, what="DL RED in FAIL_CLOSED")
            assert lane_health is not None

            # The projectors come back: fresh reports, and after the 3 s quiet period, NORMAL again.
            await anyio.to_thread.run_sync(lambda: pack_up(settings, CORE, platform_run_id=run, env=env))
            history = await wait_for(lambda: posture_history(conn, run), lambda h: h[-1].mode == "NORMAL",
                                     timeout=90, what="the ladder back at NORMAL")
            assert history[-1].reason.startswith("UPSHIFT FAIL_CLOSED->NORMAL")
            assert [c.posture_seq for c in history] == list(range(1, len(history) + 1))
        await anyio.to_thread.run_sync(lambda: pack_down(settings, LANE, timeout=30))
        await anyio.to_thread.run_sync(lambda: pack_down(settings, CORE, timeout=30))
    finally:
        await conn.close()
        kill_pack(settings, LANE)
        kill_pack(settings, CORE)
