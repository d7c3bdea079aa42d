"""kill -9 of the real decision-lane pack at random points while a world is decided (issue 12): after
`pack up`, every AUTH_REQUEST is decided exactly once, with the same content as in an uninterrupted
run of the same world; every intent has exactly one outcome; every chain is audited and resolved.

The world's traffic and context go on private streams as two platform runs. Run A is decided by
the rtdl_core and decision-lane packs without interruption; in run B the decision-lane pack is
SIGKILLed (no drain) at random moments while the records arrive in rounds, and started again.
FRAUDRT_CHAOS_LONG=1 (nox -s chaos): 10,000 flows (20,000 traffic events) and three kills; the short
form 1,500 flows and two kills.
"""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.rtdl.action_layer import outcomes_for
from fraudrt.rtdl.decision_fabric import decisions_for
from fraudrt.rtdl.decision_log_audit import audit_progress, chains
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import pack_down, pack_kill, pack_run_dir, pack_up
from fraudrt.substrate import bootstrap
from tests.support.harness import kill_pack, make_scope, mint_run_id, open_pool, put, read_events, wait_for
from tests.support.world_bus import WorldPins, generate, output_rows

pytestmark = pytest.mark.chaos

LANE = "local_parity_rtdl_decision_lane_v0"
CORE = "local_parity_rtdl_core_v0"
LONG = os.environ.get("FRAUDRT_CHAOS_LONG") == "1"
FLOWS = 10_000 if LONG else 1_500
KILLS = 3 if LONG else 2
ROUNDS = 8
OUTPUTS = {"arrival_events": "arrival_events_5B", "arrival_entities": "s1_arrival_entities_6B",
           "flow_anchor_fraud": "s3_flow_anchor_with_fraud_6B", "traffic_fraud": "s3_event_stream_with_fraud_6B"}


async def _lane_state(pool: Any, run: str) -> dict[str, Any]:
    async with pool.acquire() as conn:
        return {"decisions": await decisions_for(conn, run), "outcomes": await outcomes_for(conn, run),
                "chains": await chains(conn, run), "progress": await audit_progress(conn, run)}


def _settled(state: dict[str, Any], requests: int) -> bool:
    return (len(state["decisions"]) == requests
            and sum(1 for o in state["outcomes"] if o.status != "PENDING") == requests
            and sum(1 for c in state["chains"] if c.status == "RESOLVED") == requests)


async def test_kill9_of_the_decision_lane_decides_every_request_once_as_an_uninterrupted_run_does(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUDRT_PACKS_DIR", raising=False)
    scope = make_scope(substrate, tmp_path / "runs")
    settings = scope.settings
    await bootstrap(settings)
    world = generate(tmp_path / "world", seed=13, n_flows=FLOWS, duration_s=86400.0, fraud_rate=0.05)
    rows = {name: output_rows(world, output) for name, output in OUTPUTS.items()}
    requests = rows["traffic_fraud"].filter(rows["traffic_fraud"]["event_type"] == "AUTH_REQUEST").height
    rng = random.Random(13)

    def up(pack: str, run: str) -> None:
        pack_up(settings, pack, platform_run_id=run, env=scope.env)

    async def stream_world(bus: KinesisBus, run: str, kill_after: set[int]) -> None:
        pins = WorldPins(world, run)
        for r in range(ROUNDS):
            for name, df in rows.items():
                n = df.height
                part = df.slice(n * r // ROUNDS, n * (r + 1) // ROUNDS - n * r // ROUNDS)
                await put(bus, settings.streams.name(name), pins.envelopes(OUTPUTS[name], part))
            if r in kill_after:
                await anyio.sleep(rng.uniform(0.1, 1.5))  # somewhere among its batches and timers
                pack_kill(settings, "rtdl_decision_lane")
                await anyio.sleep(0.2)
                await anyio.to_thread.run_sync(lambda: up("rtdl_decision_lane", run))

    run_a, run_b = scope.run_id, mint_run_id()
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        try:
            for run, kills in ((run_a, set[int]()), (run_b, set(rng.sample(range(ROUNDS - 1), KILLS)))):
                for pack in ("rtdl_core", "rtdl_decision_lane"):
                    await anyio.to_thread.run_sync(lambda p=pack, r=run: up(p, r))  # type: ignore[misc]
                await stream_world(bus, run, kills)
                await wait_for(lambda r=run: _lane_state(pool, r), lambda s: _settled(s, requests),  # type: ignore[misc]
                               timeout=600, interval=1.0, what=f"every request of {run} decided and audited")
                for pack in ("rtdl_decision_lane", "rtdl_core"):
                    await anyio.to_thread.run_sync(lambda p=pack: pack_down(settings, p, timeout=60))  # type: ignore[misc]
            a, b = await _lane_state(pool, run_a), await _lane_state(pool, run_b)
        finally:
            kill_pack(settings, LANE)
            kill_pack(settings, CORE)
    started = [e for e in read_events(pack_run_dir(settings, run_b, LANE) / "events.jsonl")
               if e["event"] == "pack_started"]
    assert len(started) == KILLS + 1, "the lane really was killed and started again"
    for state in (a, b):
        sources = Counter(d.source_event_id for d in state["decisions"])
        assert len(sources) == requests and max(sources.values()) == 1, "each AUTH_REQUEST decided once"
        per_intent = Counter(o.idempotency_key for o in state["outcomes"])
        assert len(per_intent) == requests and max(per_intent.values()) == 1, "each intent one outcome"
        assert state["progress"]["lineage_unresolved_total"] == 0
        assert all(c.status == "RESOLVED" for c in state["chains"])
    # The decision ids (and so the content digests, which hold them) name the run; what was decided
    # must not depend on the kills.
    def decided(state: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
        return {d.source_event_id: (d.action, d.score, d.context_status, d.posture_mode, d.model, d.bundle_digest)
                for d in state["decisions"]}

    content = {"a": decided(a), "b": decided(b)}
    differ = [s for s in content["a"] if content["a"][s] != content["b"].get(s)]
    assert not differ, f"{len(differ)} decisions differ from the uninterrupted run's, e.g. {differ[:3]}"
    dead = []
    async with open_pool(settings) as pool:
        dead = list(await pool.fetch("SELECT actor, reason FROM rt_dead_letters WHERE platform_run_id = ANY($1)",
                                     [run_a, run_b]))
    assert dead == [], "nothing was dead-lettered"
