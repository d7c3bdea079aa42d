"""The Identity/Entity Graph on the real substrate: projection = the offline polars definition.

Each test streams a generated world's flow anchors (envelopes exactly as WSP builds them, truth
columns included) onto private streams, runs the actor in process as a pack would, and compares
every flow's features, every edge and every entity with `offline.py` over the same anchors.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.rtdl.identity_entity_graph import (
    IdentityEntityGraph,
    graph_edges,
    graph_entities,
    graph_features,
    graph_features_offline,
    graph_progress,
    observations,
)
from fraudrt.rtdl.identity_entity_graph.offline import ANCHOR_COLUMNS
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations
from fraudrt.substrate import kinesis_client
from tests.support.harness import LocalActor, checkpoints, create_streams, make_scope, open_pool, put, wait_for
from tests.support.world_bus import WorldPins, generate, output_rows

pytestmark = pytest.mark.integration

ANCHORS = "s3_flow_anchor_with_fraud_6B"
ACTOR = IdentityEntityGraph.name
FEATURES = ["device_party_count_24h", "ip_party_count_24h", "device_new_for_party", "ip_new_for_party",
            "instrument_account_count", "neighbourhood_2hop"]
US = "(extract(epoch FROM {c}) * 1000000)::bigint"


@pytest.fixture(scope="module")
async def pool(settings: Any) -> Any:
    async with open_pool(settings) as p:
        async with p.acquire() as conn:
            await apply_migrations(conn, "fraudrt.rtdl.identity_entity_graph")
        yield p


@pytest.fixture(scope="module")
async def bus(settings: Any) -> Any:
    async with KinesisBus(settings.kinesis) as b:
        yield b


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Two days at ~2,000 flows a day, so the 24h windows cut; 5% fraud gives rings, takeovers, card testing.
    return generate(tmp_path_factory.mktemp("world"), n_flows=4000, duration_s=2 * 86400, seed=20260611,
                    fraud_rate=0.05)


async def db_features(pool: Any, run: str) -> pl.DataFrame:
    rows = await pool.fetch(f"SELECT flow_id, {US.format(c='ts_utc')} AS ts_us, {', '.join(FEATURES)} "
                            "FROM ieg_flows WHERE platform_run_id = $1 ORDER BY flow_id", run)
    return pl.DataFrame([dict(r) for r in rows], schema={"flow_id": pl.Int64, "ts_us": pl.Int64,
                        **{f: pl.Boolean if "new" in f else pl.Int64 for f in FEATURES}}, orient="row")


async def db_edges(pool: Any, run: str) -> pl.DataFrame:
    rows = await pool.fetch(f"SELECT edge_type, src_id, dst_id, {US.format(c='first_seen')} AS first_seen_us, "
                            f"{US.format(c='last_seen')} AS last_seen_us, seen_count FROM ieg_edges "
                            "WHERE platform_run_id = $1 ORDER BY edge_type, src_id, dst_id", run)
    return pl.DataFrame([dict(r) for r in rows], orient="row")


async def db_entities(pool: Any, run: str) -> pl.DataFrame:
    rows = await pool.fetch(f"SELECT entity_type, entity_id, {US.format(c='first_seen')} AS first_seen_us, "
                            f"{US.format(c='last_seen')} AS last_seen_us, seen_count FROM ieg_entities "
                            "WHERE platform_run_id = $1 ORDER BY entity_type, entity_id", run)
    return pl.DataFrame([dict(r) for r in rows], orient="row")


async def table_digest(pool: Any, run: str) -> dict[str, str]:
    out = {}
    for table, order in (("ieg_flows", "flow_id"), ("ieg_edges", "edge_type, src_id, dst_id")):
        out[table] = await pool.fetchval(
            f"SELECT md5(string_agg(t::text, '|' ORDER BY {order})) FROM {table} t WHERE platform_run_id = $1", run)
    out["ieg_watermarks"] = await pool.fetchval(
        "SELECT md5(string_agg(shard_id || watermark_ts::text || late_total, '|' ORDER BY shard_id)) "
        "FROM ieg_watermarks WHERE platform_run_id = $1", run)
    return out


def assert_matches_offline(anchors: pl.DataFrame, features: pl.DataFrame, edges: pl.DataFrame,
                           entities: pl.DataFrame, *, waiting: tuple[int, ...] = ()) -> None:
    """Every flow (but those still `waiting`), edge and entity equals the offline definition."""
    obs = observations(anchors.select(ANCHOR_COLUMNS))
    offline = graph_features_offline(obs).filter(~pl.col("flow_id").is_in(waiting))
    assert_frame_equal(features.filter(~pl.col("flow_id").is_in(waiting)), offline.select(features.columns))
    assert_frame_equal(edges, graph_edges(obs), check_dtypes=False)
    assert_frame_equal(entities, graph_entities(obs), check_dtypes=False)


async def applied(pool: Any, run: str, acks: list[Any]) -> None:
    """Wait until the actor's checkpoint is at the last acknowledged record of every shard."""
    last = {a.shard_id: a.sequence_number for a in acks}
    await wait_for(lambda: checkpoints(pool, ACTOR, run),
                   lambda cps: all(cps.get((acks[0].stream, s)) == seq for s, seq in last.items()),
                   timeout=120, what="the IEG checkpoint at the last anchor")


async def test_projection_equals_the_offline_definition_and_a_replay_changes_nothing(
        substrate: Any, pool: Any, bus: KinesisBus, world: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    (stream,) = await create_streams(scope.settings, ["flow_anchor_fraud"])
    anchors = output_rows(world, ANCHORS)
    assert {"fraud_flag", "campaign_id"} <= set(anchors.columns), "the bus carries truth: the graph must drop it"
    datas = WorldPins(world, scope.run_id).envelopes(ANCHORS, anchors)
    acks = await put(bus, stream, datas)
    actor = IdentityEntityGraph()
    async with LocalActor(scope.settings, actor, scope.run_id, pool, bus):
        await applied(pool, scope.run_id, acks)
        assert_matches_offline(anchors, await db_features(pool, scope.run_id), await db_edges(pool, scope.run_id),
                               await db_entities(pool, scope.run_id))
        # Variety, or the comparison proves little: windows, caps and new edges all occur.
        features = await db_features(pool, scope.run_id)
        assert features["neighbourhood_2hop"].max() == 64 and features["neighbourhood_2hop"].min() == 0
        assert features["ip_party_count_24h"].max() >= 10 and features["device_new_for_party"].sum() > 100
        before = await table_digest(pool, scope.run_id)

        # The whole stream again (a relay re-publishing after a crash): nothing changes.
        again = await put(bus, stream, datas)
        await applied(pool, scope.run_id, again)
        assert await table_digest(pool, scope.run_id) == before
        assert actor.duplicates == len(datas)

    m = actor.metrics()
    assert m["flows_applied_total"] == len(datas) and m["flows_waiting"] == 0 and m["dead_letters_total"] == 0
    assert m["edges_total"] == graph_edges(observations(anchors.select(ANCHOR_COLUMNS))).height
    assert m["entities_total"] == graph_entities(observations(anchors.select(ANCHOR_COLUMNS))).height
    assert actor.health_details()["applied_watermark_ts_utc"] == anchors["ts_utc"].max()
    # No column of the graph's tables can hold ground truth.
    columns = {r["column_name"] for r in await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name LIKE 'ieg\\_%'")}
    assert columns and not {c for c in columns if "fraud" in c or "campaign" in c}


async def test_reader_waits_for_the_anchor_and_a_second_flow_on_one_arrival_counts(
        substrate: Any, pool: Any, bus: KinesisBus, world: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    (stream,) = await create_streams(scope.settings, ["flow_anchor_fraud"])
    anchors = output_rows(world, ANCHORS).head(1500)
    # A real engine may start several flows from one arrival: same join key, same entities and time.
    twin = anchors.slice(700, 1).with_columns(pl.col("flow_id") + 1)
    assert twin["flow_id"][0] not in anchors["flow_id"]
    anchors = pl.concat([anchors.head(701), twin, anchors.slice(701)])
    first, rest = anchors.head(1000), anchors.slice(1000)
    pins = WorldPins(world, scope.run_id)
    later = rest["flow_id"].to_list()
    async with LocalActor(scope.settings, IdentityEntityGraph(), scope.run_id, pool, bus):
        await applied(pool, scope.run_id, await put(bus, stream, pins.envelopes(ANCHORS, first)))
        # DF asks about flows whose traffic came before their context: not there yet, and it says why.
        early = await graph_features(pool, scope.run_id, later[:100])
        assert [(g.complete, g.waiting_for) for g in early] == [(False, "FLOW_ANCHOR")] * 100

        await applied(pool, scope.run_id, await put(bus, stream, pins.envelopes(ANCHORS, rest)))
        answers = await graph_features(pool, scope.run_id, [*later, *first["flow_id"].to_list()])
    assert all(g.complete and g.waiting_for is None for g in answers)
    everything = pl.concat([first, rest])
    offline = graph_features_offline(observations(everything.select(ANCHOR_COLUMNS))).sort("flow_id")
    online = pl.DataFrame([{"flow_id": g.flow_id, **{f: getattr(g, f) for f in FEATURES}} for g in answers])
    assert_frame_equal(online.sort("flow_id"), offline.select("flow_id", *FEATURES))
    # The twin saw its sibling? No: at exactly the same time, neither is before the other.
    by_id = {g.flow_id: g for g in answers}
    sibling, second = by_id[twin["flow_id"][0] - 1], by_id[twin["flow_id"][0]]
    assert msgspec_fields(sibling) == msgspec_fields(second)
    assert second.as_of_ts_utc == twin["ts_utc"][0] and second.graph_version == sibling.graph_version
    progress = await graph_progress(pool, scope.run_id)
    assert progress.applied_watermark_ts_utc == everything["ts_utc"].max()


def msgspec_fields(g: Any) -> tuple[Any, ...]:
    return tuple(getattr(g, f) for f in FEATURES)


async def test_a_restarted_actor_rebuilds_its_graph_from_postgres(
        substrate: Any, pool: Any, bus: KinesisBus, world: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    (stream,) = await create_streams(scope.settings, ["flow_anchor_fraud"])
    anchors = output_rows(world, ANCHORS)
    datas = WorldPins(world, scope.run_id).envelopes(ANCHORS, anchors)
    half = len(datas) // 2
    async with LocalActor(scope.settings, IdentityEntityGraph(), scope.run_id, pool, bus):
        await applied(pool, scope.run_id, await put(bus, stream, datas[:half]))
    # A new process: everything it knows comes from what the first one committed.
    async with LocalActor(scope.settings, IdentityEntityGraph(), scope.run_id, pool, bus):
        await applied(pool, scope.run_id, await put(bus, stream, datas[half:]))
    assert_matches_offline(anchors, await db_features(pool, scope.run_id), await db_edges(pool, scope.run_id),
                           await db_entities(pool, scope.run_id))


async def shard_of_keys(settings: Any, stream: str) -> list[tuple[str, int, int]]:
    async with kinesis_client(settings.kinesis) as k:
        shards = (await k.list_shards(StreamName=stream))["Shards"]
    return [(s["ShardId"], int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
            for s in shards]


async def test_with_two_shards_a_flow_waits_until_the_other_shard_has_passed_its_time(
        substrate: Any, pool: Any, bus: KinesisBus, world: Any, tmp_path: Path) -> None:
    import hashlib

    scope = make_scope(substrate, tmp_path / "runs")
    (stream,) = await create_streams(scope.settings, ["flow_anchor_fraud"], shards=2)
    ranges = await shard_of_keys(scope.settings, stream)
    all_anchors = output_rows(world, ANCHORS)
    anchors = all_anchors.head(2000)
    pins = WorldPins(world, scope.run_id)
    datas = pins.envelopes(ANCHORS, anchors)
    keys = [str(f) for f in anchors["flow_id"]]

    def shard(key: str) -> str:
        h = int(hashlib.md5(key.encode()).hexdigest(), 16)
        return next(s for s, lo, hi in ranges if lo <= h <= hi)

    # Shard A is the one holding the newest of these flows, so some of A's flows come after B's last.
    shard_a, shard_b = ranges[0][0], ranges[1][0]
    if shard(keys[-1]) != shard_a:
        shard_a, shard_b = shard_b, shard_a
    on_a = [i for i, k in enumerate(keys) if shard(k) == shard_a]
    on_b = [i for i, k in enumerate(keys) if shard(k) == shard_b]
    assert len(on_a) > 500 and len(on_b) > 500
    async with LocalActor(scope.settings, IdentityEntityGraph(), scope.run_id, pool, bus) as la:
        # Shard A's whole history first: shard B has told us nothing, so no flow is final yet.
        acks_a = await put(bus, stream, [datas[i] for i in on_a], keys=[keys[i] for i in on_a])
        assert {a.shard_id for a in acks_a} == {shard_a}
        await applied(pool, scope.run_id, acks_a)
        waiting = await graph_features(pool, scope.run_id, [int(keys[i]) for i in on_a])
        assert {(g.complete, g.waiting_for) for g in waiting} == {(False, "EARLIER_CONTEXT")}
        assert la.actor.metrics()["flows_waiting"] == len(on_a)
        # Then B's first half: A's flows up to B's watermark become final, and exactly those.
        half_b = on_b[: len(on_b) // 2]
        acks_b = await put(bus, stream, [datas[i] for i in half_b], keys=[keys[i] for i in half_b])
        await applied(pool, scope.run_id, acks_b)
        b_watermark = anchors["ts_utc"][half_b[-1]]
        answers = await graph_features(pool, scope.run_id, [int(k) for k in keys])
        applied_now = set(on_a) | set(half_b)
        ts = anchors["ts_utc"].to_list()
        final = [i in applied_now and ts[i] <= b_watermark for i in range(len(keys))]
        assert [g.complete for g in answers] == final
        assert 100 < sum(final[i] for i in on_a) < len(on_a), "some of A's flows final, some still waiting"
        # The rest of B: A's flows after B's last record still wait (B may yet carry an earlier one) ...
        rest_b = on_b[len(on_b) // 2:]
        await applied(pool, scope.run_id, await put(bus, stream, [datas[i] for i in rest_b],
                                                    keys=[keys[i] for i in rest_b]))
        after_b = sum(1 for i in on_a if ts[i] > ts[on_b[-1]])
        assert after_b > 0 and la.actor.metrics()["flows_waiting"] == after_b
        # ... until B moves past them. Then only B's newest flow waits, for A to pass it in turn.
        later = next(r for r in all_anchors.slice(2000).iter_rows(named=True)
                     if shard(str(r["flow_id"])) == shard_b)
        more = all_anchors.filter(pl.col("flow_id") == later["flow_id"])
        await applied(pool, scope.run_id, await put(bus, stream, pins.envelopes(ANCHORS, more),
                                                    keys=[str(later["flow_id"])]))
        assert la.actor.metrics()["flows_waiting"] == 1
        (newest,) = await graph_features(pool, scope.run_id, [later["flow_id"]])
        assert newest.waiting_for == "EARLIER_CONTEXT"
    # Every final flow, edge and entity equals the offline definition over the same anchors.
    assert_matches_offline(pl.concat([anchors, more]), await db_features(pool, scope.run_id),
                           await db_edges(pool, scope.run_id), await db_entities(pool, scope.run_id),
                           waiting=(later["flow_id"],))


async def test_bad_anchors_are_dead_lettered_with_their_reason_and_the_rest_applies(
        substrate: Any, pool: Any, bus: KinesisBus, world: Any, tmp_path: Path) -> None:
    import json

    scope = make_scope(substrate, tmp_path / "runs")
    (stream,) = await create_streams(scope.settings, ["flow_anchor_fraud"])
    anchors = output_rows(world, ANCHORS).head(300)
    pins = WorldPins(world, scope.run_id)
    good = pins.envelopes(ANCHORS, anchors)

    def edited(i: int, **payload: Any) -> bytes:
        doc = json.loads(good[i])
        doc["payload"].update(payload)
        doc["event_id"] = "f" * 63 + str(i % 10)
        return json.dumps(doc).encode()

    no_party = json.loads(good[10])
    del no_party["payload"]["party_id"]
    no_party["event_id"] = "e" * 64
    wrong_type = json.loads(good[11])
    wrong_type["event_type"] = "s1_arrival_entities_6B"
    # Flow 14 anchored a second time in a later batch, flow 250 twice within one batch.
    bad = [json.dumps(no_party).encode(), json.dumps(wrong_type).encode(), edited(12, device_id=-5),
           edited(13, ts_utc="yesterday"), edited(14, party_id=1)]
    actor = IdentityEntityGraph()
    async with LocalActor(scope.settings, actor, scope.run_id, pool, bus):
        await applied(pool, scope.run_id, await put(bus, stream, good[:200]))
        acks = await put(bus, stream, [*bad, *good[200:251], edited(250, party_id=2), *good[251:]])
        await applied(pool, scope.run_id, acks)
    dead = {r["sequence_number"]: r["reason"] for r in await pool.fetch(
        "SELECT sequence_number, reason FROM rt_dead_letters WHERE actor = $1 AND platform_run_id = $2",
        ACTOR, scope.run_id)}
    reasons = [dead[a.sequence_number] for a in [*acks[:5], acks[5 + 51]]]
    assert reasons[0].startswith("INVALID_FLOW_ANCHOR: Object missing required field `party_id`")
    assert reasons[1] == "UNEXPECTED_EVENT_TYPE: 's1_arrival_entities_6B' on the flow anchor stream"
    assert reasons[2] == "ID_OUT_OF_RANGE: -5 is not an unsigned 64-bit id"
    assert reasons[3].startswith("BAD_TS_UTC: 'yesterday'")
    for i, reason in ((14, reasons[4]), (250, reasons[5])):
        assert reason == (f"FLOW_ID_CONFLICT: flow {anchors['flow_id'][i]} is already anchored by event "
                          f"{json.loads(good[i])['event_id']}")
    assert len(dead) == 6
    assert_matches_offline(anchors, await db_features(pool, scope.run_id), await db_edges(pool, scope.run_id),
                           await db_entities(pool, scope.run_id))
    state, why = actor.health()
    assert state == "AMBER" and any(r.startswith("DEAD_LETTERS: 6 ") for r in why)
