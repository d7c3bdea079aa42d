"""The Action Layer and the Decision Log/Audit under a dependency outage longer than any client's retry
budget: the object store (DLA's segments) or the database (both) goes away for 20 s while decisions
and intents arrive. Nothing is dead-lettered, every intent gets one outcome, every chain is audited
once, and while the dependency is down the health files say so."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import health_path
from fraudrt.rtdl.action_layer import outcomes_for
from fraudrt.rtdl.decision_log_audit import chains
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations, pack_up
from tests.support.harness import create_streams, kill_pack, make_scope, open_pool, outage, put, wait_for
from tests.support.lane_events import chain

pytestmark = pytest.mark.chaos

CHAINS = 400
OUTAGE_SECONDS = 20.0


def _health(runs: Path, run: str, component: str) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(health_path(runs, run, component).read_text())
    except (OSError, ValueError):
        return None
    return doc


@pytest.mark.parametrize("service", ["s3", "postgres"])
async def test_an_outage_is_waited_out_and_every_intent_and_chain_comes_through_once(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", scope.env["FRAUDRT_PACKS_DIR"])
    settings, run = scope.settings, scope.run_id
    runs = Path(settings.runs_root)
    rtdl, _audit = await create_streams(settings, ["rtdl", "audit"])
    lane = [chain(run, i) for i in range(CHAINS)]
    try:
        await anyio.to_thread.run_sync(lambda: pack_up(settings, "test_decision_lane", platform_run_id=run,
                                                       env=scope.env))
        async with KinesisBus(settings.kinesis) as bus:
            await put(bus, rtdl, [d for c in lane[:CHAINS // 2] for d in (c.decision, c.intent)])
        async with outage(substrate.settings, service):
            # A fresh client: stopping a server can take long enough for a kept-alive connection to go stale.
            async with KinesisBus(settings.kinesis) as bus:
                await put(bus, rtdl, [d for c in lane[CHAINS // 2:] for d in (c.decision, c.intent)])
            seen_down = False
            deadline = anyio.current_time() + OUTAGE_SECONDS
            while anyio.current_time() < deadline:
                dla = _health(runs, run, "decision_log_audit")
                seen_down = seen_down or (dla is not None and dla["health_state"] != "GREEN")
                await anyio.sleep(0.5)
            assert seen_down, "DLA's health said the dependency was down"

        def done(h: tuple[dict[str, Any] | None, dict[str, Any] | None]) -> bool:
            al, dla = h
            return (al is not None and dla is not None and al["details"]["outcome_total"] == CHAINS
                    and dla["details"]["chains_resolved_total"] == CHAINS
                    and al["health_state"] == dla["health_state"] == "GREEN")

        async def files() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            return _health(runs, run, "action_layer"), _health(runs, run, "decision_log_audit")

        al, dla = await wait_for(files, done, timeout=180, interval=0.5, what="every chain through, GREEN again")
        async with open_pool(substrate.settings) as pool:
            async with pool.acquire() as conn:
                await apply_migrations(conn, "fraudrt.rtdl.action_layer", "fraudrt.rtdl.decision_log_audit")
                outcomes = await outcomes_for(conn, run)
                audited = await chains(conn, run)
            dead = await pool.fetch("SELECT actor, reason FROM rt_dead_letters WHERE platform_run_id = $1", run)
    finally:
        kill_pack(settings, "test_decision_lane_v0")
    assert [dict(d) for d in dead] == [], "an outage is never a poison record"
    assert sorted(o.idempotency_key for o in outcomes) == sorted(c.idempotency_key for c in lane)
    assert all(o.status != "PENDING" for o in outcomes)
    assert sorted(v.decision_id for v in audited) == sorted(c.decision_id for c in lane)
    assert {v.status for v in audited} == {"RESOLVED"}
    assert al is not None and al["details"]["intake_total"] == CHAINS
    assert dla is not None and dla["details"]["lineage_unresolved_total"] == 0
