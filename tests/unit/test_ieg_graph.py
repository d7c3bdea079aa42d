"""The IEG's in-memory graph against the offline polars definition, with no substrate.

The actor computes each flow's features from `GraphState` as batches commit; the policy fitter
computes them with `offline.py`. They must agree exactly, for any batching, any order in which the
observations before a flow were applied, equal timestamps, hour boundaries, and the caps.
"""

from __future__ import annotations

import random
import time
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraudrt.engine import GenerateRequest, generate_world
from fraudrt.rtdl.identity_entity_graph import Definition, IdentityEntityGraph, graph_features_offline, to_i64
from fraudrt.rtdl.identity_entity_graph import _actor as actor_module
from fraudrt.rtdl.identity_entity_graph._definition import HOUR_US, BadObservation, event_time_us, format_us
from fraudrt.rtdl.identity_entity_graph._graph import GraphState, Observation, Staged
from fraudrt.rtdl.identity_entity_graph.offline import observations, read_flow_anchors

pytestmark = pytest.mark.unit

SMALL = Definition(distinct_cap=3, neighbourhood_cap=6)


def as_frame(features: dict[int, Any]) -> pl.DataFrame:
    return pl.DataFrame([{"flow_id": f, **{k: getattr(v, k) for k in v.__struct_fields__}}
                         for f, v in sorted(features.items())])


def expected(obs: pl.DataFrame, definition: Definition) -> pl.DataFrame:
    return graph_features_offline(obs, definition).drop("ts_us")


def replay_in_order(rows: list[Observation], definition: Definition, seed: int) -> dict[int, Any]:
    """As the actor does on one shard: random batches in event-time order, features at apply, hours pruned."""
    graph, out, rnd = GraphState(definition), {}, random.Random(seed)
    rows = sorted(rows, key=lambda o: o.ts_us)
    i = 0
    while i < len(rows):
        chunk = rows[i:i + rnd.randint(1, 60)]
        i += len(chunk)
        staged = Staged()
        for o in chunk:
            graph.stage(staged, o)
        for o in chunk:
            out[o.flow_id] = graph.features(staged, o)
        graph.commit(staged)
        graph.prune_hours(chunk[-1].ts_us // HOUR_US - definition.window_hours)
    return out


@pytest.fixture(scope="module")
def world_obs(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    world = generate_world(GenerateRequest(out_dir=str(tmp_path_factory.mktemp("w")), n_flows=5000,
                                           duration_s=3 * 86400, seed=99, fraud_rate=0.05))
    return observations(read_flow_anchors(world.engine_run_root))


@pytest.mark.parametrize("definition", [Definition(), SMALL], ids=["platform", "small-caps"])
def test_online_in_event_time_order_equals_offline_on_a_generated_world(world_obs: pl.DataFrame,
                                                                       definition: Definition) -> None:
    rows = [Observation(**r) for r in world_obs.iter_rows(named=True)]
    online = as_frame(replay_in_order(rows, definition, seed=1))
    offline = expected(world_obs, definition)
    assert_frame_equal(online.select(offline.columns), offline, check_dtypes=False)
    # The caps bind and the 24h window cuts (a 3-day world), or this test would prove little.
    assert offline["neighbourhood_2hop"].max() == definition.neighbourhood_cap
    hours = world_obs["ts_us"] // HOUR_US
    assert hours.max() - hours.min() > 2 * definition.window_hours


def random_observations(n: int, seed: int) -> list[Observation]:
    """Dense small id spaces, equal timestamps, times on and around hour edges, over three days."""
    rnd = random.Random(seed)
    base = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    times = [base + rnd.choice([0, 1, HOUR_US - 1, HOUR_US]) + rnd.randrange(72) * HOUR_US for _ in range(n // 3)]
    out = []
    for k in range(n):
        t = rnd.choice(times) if rnd.random() < 0.5 else base + rnd.randrange(72 * HOUR_US)
        out.append(Observation(flow_id=k + 1, ts_us=t, merchant=rnd.randrange(5), arrival_seq=k,
                               party=rnd.randrange(40), account=rnd.randrange(50), instrument=rnd.randrange(45),
                               device=rnd.randrange(30), ip=rnd.randrange(25)))
    return out


def frame_of(rows: list[Observation]) -> pl.DataFrame:
    return pl.DataFrame([{f: getattr(o, f) for f in o.__struct_fields__} for o in rows], schema={
        f: pl.Int64 for f in Observation.__struct_fields__})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_answers_are_as_of_the_flow_whatever_else_is_already_applied(seed: int) -> None:
    rows = random_observations(1500, seed)
    offline = expected(frame_of(rows), SMALL)
    online = as_frame(replay_in_order(rows, SMALL, seed))
    assert_frame_equal(online.select(offline.columns), offline, check_dtypes=False)
    # Everything applied, in any order and batching, some of it still staged: the same answers.
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    graph = GraphState(SMALL)
    for start in range(0, 1000, 97):
        staged = Staged()
        for o in shuffled[start:min(start + 97, 1000)]:
            graph.stage(staged, o)
        graph.commit(staged)
    staged = Staged()
    for o in shuffled[1000:]:
        graph.stage(staged, o)
    late = as_frame({o.flow_id: graph.features(staged, o) for o in rows})
    assert_frame_equal(late.select(offline.columns), offline, check_dtypes=False)


def test_ids_keep_their_bits_and_times_their_microseconds() -> None:
    assert to_i64(0) == 0 and to_i64(2**63 - 1) == 2**63 - 1
    assert to_i64(2**63) == -(2**63) and to_i64(2**64 - 1) == -1
    for bad in (-1, 2**64):
        with pytest.raises(BadObservation, match="ID_OUT_OF_RANGE"):
            to_i64(bad)
    us = event_time_us("2026-01-01T00:00:00.000001Z")
    assert us == 1_767_225_600_000_001 and format_us(us) == "2026-01-01T00:00:00.000001Z"
    assert event_time_us("2026-01-01T01:00:00.000001+01:00") == us
    for bad_ts in ("yesterday", "2026-01-01T00:00:00"):
        with pytest.raises(BadObservation, match="BAD_TS_UTC"):
            event_time_us(bad_ts)


def test_offline_and_online_read_unsigned_ids_alike() -> None:
    anchors = pl.DataFrame({"flow_id": [1, 2], "ts_utc": ["2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:01.000000Z"],
                            "merchant_id": [2**64 - 1, 5], "arrival_seq": [1, 1], "party_id": [1, 1],
                            "account_id": [1, 1], "instrument_id": [1, 1], "device_id": [1, 1], "ip_id": [1, 2]},
                           schema_overrides={"merchant_id": pl.UInt64})
    obs = observations(anchors)
    assert obs["merchant"].to_list() == [-1, 5]
    assert obs["ts_us"].to_list() == [1_767_225_600_000_000, 1_767_225_601_000_000]


def test_health_is_green_when_idle_and_names_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    actor = IdentityEntityGraph()
    assert actor.health() == ("GREEN", [])
    now = time.time()
    actor._last_commit, actor._lag_ms = now, 3_000.0
    assert actor.health()[0] == "AMBER" and actor.health()[1][0].startswith("CONSUMER_LAG: 3000 ms")
    actor._lag_ms = 45_000.0
    assert actor.health()[0] == "RED"
    # Nothing new for a while: the stream is idle, the last lag is history.
    actor._last_commit = now - actor_module.IDLE_AFTER_S - 1
    assert actor.health() == ("GREEN", [])
    actor.dead_letters = 1
    assert actor.health() == ("AMBER", ["DEAD_LETTERS: 1 flow anchors dead-lettered in this run"])
    actor.dead_letters = actor_module.DEAD_LETTERS_RED
    assert actor.health()[0] == "RED"
    actor.dead_letters = 0
    o = Observation(1, 0, 0, 0, 0, 0, 0, 0, 0)
    actor._waiting = [(0, 1, o)]
    actor._waiting_since = {1: now - actor_module.WAITING_STALLED_S - 1}
    assert actor.health()[0] == "AMBER" and actor.health()[1][0].startswith("WATERMARK_STALLED: 1 flows")


def test_a_batch_of_graph_versions_is_the_recipe_applied_to_each() -> None:
    from fraudrt.contracts import IdRecipeError, ieg_graph_as_of_version, ieg_graph_as_of_versions

    run, digest = "platform_20260101T000000Z", "ab" * 16
    times = ["2026-01-01T00:00:00.000000Z", "2026-01-02T00:00:00.000001Z"]
    assert ieg_graph_as_of_versions(run, digest, times) == [ieg_graph_as_of_version(run, digest, t) for t in times]
    with pytest.raises(IdRecipeError):
        ieg_graph_as_of_versions(run, digest, ["a|b"])
