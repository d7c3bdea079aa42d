"""kill -9 of the real rtdl_core pack at random points while it projects a world, then `pack up`: the
state its readers serve equals that of an uninterrupted run of the same world (issue 11).

The world is put on private streams twice, as two platform runs: run A is projected without
interruption, run B is killed (SIGKILL, no drain) at random moments while its records arrive in
rounds. Then every flow's binding (CSFB), feature vector (OFP) and graph features (IEG), read through
the typed readers, is compared between the two runs, along with dead letters (none) and the archive
(every record once). FRAUDRT_CHAOS_LONG=1 (nox -s chaos): 10,000 flows (20,000 traffic events) and
three kills; the short form 3,000 flows and two kills.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.rtdl.context_store_flow_binding import resolve_flow_binding
from fraudrt.rtdl.identity_entity_graph import graph_features
from fraudrt.rtdl.online_feature_plane import features_for
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import pack_down, pack_kill, pack_up
from fraudrt.substrate import bootstrap
from tests.support.harness import Ack, checkpoints, kill_pack, make_scope, mint_run_id, open_pool, put, wait_for
from tests.support.world_bus import WorldPins, generate, output_rows

pytestmark = pytest.mark.chaos

CORE = "local_parity_rtdl_core_v0"
LONG = os.environ.get("FRAUDRT_CHAOS_LONG") == "1"
FLOWS = 10_000 if LONG else 3_000
KILLS = 3 if LONG else 2
ROUNDS = 8
OUTPUTS = {"arrival_events": "arrival_events_5B", "arrival_entities": "s1_arrival_entities_6B",
           "flow_anchor_fraud": "s3_flow_anchor_with_fraud_6B", "traffic_fraud": "s3_event_stream_with_fraud_6B"}
# Which streams each projector reads (its checkpoints must reach their ends).
READS = {"context_store_flow_binding": ("arrival_events", "arrival_entities", "flow_anchor_fraud"),
         "online_feature_plane": ("traffic_fraud", "flow_anchor_fraud"),
         "identity_entity_graph": ("flow_anchor_fraud",),
         "archive_writer": tuple(OUTPUTS)}


def _digest(items: list[Any]) -> str:
    return hashlib.sha256(msgspec.json.encode(items)).hexdigest()


async def _served_state(pool: Any, run: str, flow_ids: list[int]) -> dict[str, str]:
    """Per projector, a digest of what its reader serves for every flow (nothing run-specific in it)."""
    bindings: list[Any] = []
    vectors: list[Any] = []
    graphs: list[Any] = []
    for start in range(0, len(flow_ids), 500):
        chunk = flow_ids[start:start + 500]
        got = await resolve_flow_binding(pool, run, chunk)
        bindings += [msgspec.to_builtins(got[f]) for f in chunk]
        async with pool.acquire() as conn:
            batch = await features_for(conn, run, chunk)
        vectors += [(f.flow_id, f.complete, f.values, f.exact, f.definitions_digest) for f in batch.flows]
        graphs += [msgspec.to_builtins(msgspec.structs.replace(g, graph_version=None))
                   for g in await graph_features(pool, run, chunk)]
    assert all(v[1] for v in vectors), "every flow aggregated"
    assert all(g["complete"] for g in graphs), "every flow in the graph"
    return {"context_store_flow_binding": _digest(bindings), "online_feature_plane": _digest(vectors),
            "identity_entity_graph": _digest(graphs)}


async def _done(pool: Any, run: str, last: dict[str, Ack]) -> bool:
    for component, logical in READS.items():
        cps = await checkpoints(pool, component, run)
        for name in logical:
            ack = last[name]
            if cps.get((ack.stream, ack.shard_id)) != ack.sequence_number:
                return False
    return True


async def test_kill9_at_random_points_leaves_the_same_state_as_an_uninterrupted_run(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAUDRT_PACKS_DIR", raising=False)
    scope = make_scope(substrate, tmp_path / "runs")
    settings = scope.settings
    await bootstrap(settings)
    world = generate(tmp_path / "world", seed=11, n_flows=FLOWS, duration_s=2 * 86400.0, fraud_rate=0.03)
    rows = {name: output_rows(world, output) for name, output in OUTPUTS.items()}
    flow_ids = sorted(rows["flow_anchor_fraud"]["flow_id"].to_list())
    rng = random.Random(11)

    def up(run: str) -> None:
        pack_up(settings, "rtdl_core", platform_run_id=run, env=scope.env)

    async def stream_world(bus: KinesisBus, run: str, kill_after: set[int]) -> dict[str, Ack]:
        """Put the world's outputs in rounds (each stream in event-time order), killing after some rounds."""
        pins = WorldPins(world, run)
        last: dict[str, Ack] = {}
        for r in range(ROUNDS):
            for name, df in rows.items():
                n = df.height
                part = df.slice(n * r // ROUNDS, n * (r + 1) // ROUNDS - n * r // ROUNDS)
                acks = await put(bus, settings.streams.name(name), pins.envelopes(OUTPUTS[name], part))
                if acks:
                    last[name] = acks[-1]
            if r in kill_after:
                await anyio.sleep(rng.uniform(0.05, 1.5))  # somewhere in the middle of its batches
                pack_kill(settings, "rtdl_core")
                await anyio.sleep(0.2)
                await anyio.to_thread.run_sync(lambda: up(run))
        return last

    run_a, run_b = scope.run_id, mint_run_id()
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        try:
            await anyio.to_thread.run_sync(lambda: up(run_a))
            last_a = await stream_world(bus, run_a, set())
            await wait_for(lambda: _done(pool, run_a, last_a), bool, timeout=300, what="run A projected")
            expected = await _served_state(pool, run_a, flow_ids)
            await anyio.to_thread.run_sync(lambda: pack_down(settings, "rtdl_core", timeout=60))

            await anyio.to_thread.run_sync(lambda: up(run_b))
            kills = set(rng.sample(range(ROUNDS - 1), KILLS))
            last_b = await stream_world(bus, run_b, kills)
            await wait_for(lambda: _done(pool, run_b, last_b), bool, timeout=300, what="run B projected")
            got = await _served_state(pool, run_b, flow_ids)
        finally:
            kill_pack(settings, CORE)
        assert got == expected, "the killed run serves the same bindings, vectors and graph features"
        dead = await pool.fetch("SELECT actor, reason FROM rt_dead_letters WHERE platform_run_id = ANY($1)",
                                [run_a, run_b])
        assert list(dead) == [], "nothing was dead-lettered"
        archived = {run: await pool.fetchval("SELECT sum(record_count) FROM archive_segments "
                                             "WHERE platform_run_id = $1", run) for run in (run_a, run_b)}
        total = sum(df.height for df in rows.values())
        assert archived == {run_a: total, run_b: total}, "every record archived once in both runs"
