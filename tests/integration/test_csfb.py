"""CSFB on the real embedded substrate: a generated world's context on private streams, the actor in process.

Every test puts real envelopes on kinesalite, lets the actor commit to the embedded Postgres through
the runtime, and reads the result back only through the public reader.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import polars as pl
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import engine_event_id
from fraudrt.engine import load_catalogue
from fraudrt.rtdl.context_store_flow_binding import (
    NOTIFY_CHANNEL,
    ContextStoreFlowBinding,
    JoinFrameKey,
    Readiness,
    binding_row,
    completed_since,
    fetch_join_frames,
    frame_row,
    join_readiness,
    offline,
    progress,
    resolve_flow_binding,
    state_digest,
)
from fraudrt.runtime._fence import Notifications
from fraudrt.runtime.bus import KinesisBus, seq_key
from fraudrt.runtime.packs import apply_migrations
from tests.support.harness import Ack, LocalActor, create_streams, make_scope, open_pool, put, wait_for
from tests.support.rtdl_world import envelopes, make_world

pytestmark = pytest.mark.integration

CSFB = "context_store_flow_binding"
ANCHOR_OUTPUT = "s3_flow_anchor_with_fraud_6B"
OUTPUT_OF = {"arrival_events": "arrival_events_5B", "arrival_entities": "s1_arrival_entities_6B",
             "flow_anchor_fraud": ANCHOR_OUTPUT}
PART_OF = {"arrival_events": "arrival_event", "arrival_entities": "arrival_entities",
           "flow_anchor_fraud": "flow_anchor"}


@pytest.fixture(scope="module")
async def pool(settings: Settings) -> Any:
    async with open_pool(settings) as p:
        async with p.acquire() as conn:
            await apply_migrations(conn, "fraudrt.rtdl.context_store_flow_binding")
        yield p


@pytest.fixture(scope="module")
async def bus(settings: Settings) -> Any:
    async with KinesisBus(settings.kinesis) as b:
        yield b


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_world(tmp_path_factory.mktemp("csfb_world"), n_flows=1500, seed=11)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_world(tmp_path_factory.mktemp("csfb_small"), n_flows=40, seed=12)


# ------------------------------------------------------------------ helpers


def world_envelopes(root: Path, run: str) -> dict[str, list[bytes]]:
    return {logical: envelopes(root, output, run) for logical, output in OUTPUT_OF.items()}


def offline_frames(root: Path) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    return offline.read_context(root, "fraud")


async def put_all(bus: KinesisBus, settings: Settings, datas: dict[str, list[bytes]]) -> list[Ack]:
    acks: list[Ack] = []
    for logical, items in datas.items():
        if items:
            acks += await put(bus, settings.streams.name(logical), items)
    return acks


async def wait_applied(pool: Any, run: str, acks: Iterable[Ack], timeout: float = 60.0) -> None:
    """Until CSFB's checkpoints for `run` reach the last of `acks` on each shard (handled or dead-lettered)."""
    last: dict[tuple[str, str], str] = {}
    for a in acks:
        key = (a.stream, a.shard_id)
        if key not in last or seq_key(a.sequence_number) > seq_key(last[key]):
            last[key] = a.sequence_number

    async def probe() -> dict[tuple[str, str], str]:
        rows = await pool.fetch("SELECT stream, shard_id, sequence_number FROM rt_checkpoints "
                                "WHERE actor = $1 AND platform_run_id = $2", CSFB, run)
        return {(r["stream"], r["shard_id"]): r["sequence_number"] for r in rows}

    await wait_for(probe, lambda cps: all(k in cps and seq_key(cps[k]) >= seq_key(s) for k, s in last.items()),
                   timeout=timeout, what="CSFB checkpoints at the last record put")


async def all_bindings(pool: Any, run: str, flow_ids: Sequence[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for start in range(0, len(flow_ids), 500):
        chunk = flow_ids[start:start + 500]
        got = await resolve_flow_binding(pool, run, chunk)
        rows += [binding_row(got[f]) for f in chunk]
    return rows


async def all_frames(pool: Any, run: str, keys: Sequence[tuple[int, int]]) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        got = await fetch_join_frames(pool, run, chunk)
        out += [frame_row(f) if (f := got[JoinFrameKey(*k)]) is not None else None for k in chunk]
    return out


def value_of(get: Any) -> Any:
    async def probe() -> Any:
        return get()
    return probe


def rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    return df.to_dicts()


async def assert_equals_offline(pool: Any, run: str, ae: Any, aen: Any, fa: Any) -> None:
    expected_b = rows(offline.flow_bindings(ae, aen, fa))
    assert await all_bindings(pool, run, [r["flow_id"] for r in expected_b]) == expected_b
    expected_f = rows(offline.join_frames(ae, aen, fa))
    assert await all_frames(pool, run, [(r["merchant_id"], r["arrival_seq"]) for r in expected_f]) == expected_f


def envelope_with(data: bytes, **payload: Any) -> bytes:
    """A copy of an envelope with payload fields changed (event id recomputed from the new primary key)."""
    doc = json.loads(data)
    doc["payload"].update(payload)
    spec = load_catalogue().output(doc["event_type"])
    pins = {k: doc[k] for k in ("manifest_fingerprint", "parameter_hash", "seed", "scenario_id")}
    doc["event_id"] = engine_event_id(doc["event_type"], doc["payload"], spec.primary_key, pins)
    return json.dumps(doc, separators=(",", ":")).encode()


def with_event_id(data: bytes, event_id: str, **payload: Any) -> bytes:
    """A copy of an envelope under another event id (another event claiming the same thing)."""
    doc = json.loads(data)
    doc["payload"].update(payload)
    doc["event_id"] = event_id
    return json.dumps(doc, separators=(",", ":")).encode()


def payload_frame(datas: Iterable[bytes]) -> pl.LazyFrame:
    return pl.LazyFrame([json.loads(d)["payload"] for d in datas], infer_schema_length=None)


# ------------------------------------------------------------------ tests


async def test_bindings_and_frames_equal_the_offline_join_of_the_world(
        substrate: Any, pool: Any, bus: KinesisBus, world: Path, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, OUTPUT_OF)
    acks = await put_all(bus, scope.settings, world_envelopes(world, scope.run_id))
    actor = ContextStoreFlowBinding()
    async with LocalActor(scope.settings, actor, scope.run_id, pool, bus) as la:
        await wait_applied(pool, scope.run_id, acks)
    assert la.stats.dead_lettered == 0

    await assert_equals_offline(pool, scope.run_id, *offline_frames(world))
    n_flows = offline.flow_bindings_from_world(world, "fraud").height
    m = actor.metrics()
    assert m["bindings_total"] == n_flows == 1500
    assert m["join_hits"] + m["late_joins"] == n_flows and m["join_misses"] == 0
    assert m["frames_total"] == m["frames_complete"] == n_flows
    assert m["applied_watermark.flow_anchor"] == max(json.loads(a.data)["ts_utc"] for a in acks)
    assert actor.health() == ("GREEN", [])
    p = await progress(pool, scope.run_id)
    assert (p.bindings_total, p.join_hits, p.late_joins, p.join_misses) == (
        n_flows, m["join_hits"], m["late_joins"], 0)
    page = await completed_since(pool, scope.run_id, 0, limit=10_000)
    assert sorted(page.flow_ids) == sorted(r["flow_id"] for r in rows(offline.flow_bindings(*offline_frames(world))))
    assert page.cursor == p.completion_cursor


async def test_tables_hold_no_ground_truth(substrate: Any, pool: Any, bus: KinesisBus, small_world: Path,
                                           tmp_path: Path) -> None:
    """The same world with its truth columns flipped gives byte-identical CSFB state."""
    columns = {r["column_name"] for r in await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name LIKE 'csfb\\_%'")}
    assert not {c for c in columns if "fraud" in c or "campaign" in c}, columns

    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, OUTPUT_OF)
    truthful, flipped = scope.run_id, scope.run_id.replace("platform_2", "platform_1")
    datas = world_envelopes(small_world, truthful)
    other = world_envelopes(small_world, flipped)
    other["flow_anchor_fraud"] = [
        envelope_with(d, fraud_flag=not json.loads(d)["payload"]["fraud_flag"], campaign_id="mule_ring_99999")
        for d in other["flow_anchor_fraud"]]
    assert other["flow_anchor_fraud"] != world_envelopes(small_world, flipped)["flow_anchor_fraud"]
    acks = await put_all(bus, scope.settings, datas) + await put_all(bus, scope.settings, other)
    async with LocalActor(scope.settings, ContextStoreFlowBinding(), truthful, pool, bus), \
            LocalActor(scope.settings, ContextStoreFlowBinding(), flipped, pool, bus):
        await wait_applied(pool, truthful, acks)
        await wait_applied(pool, flipped, acks)
    assert await state_digest(pool, truthful) == await state_digest(pool, flipped)


@pytest.mark.parametrize("order", list(itertools.permutations(OUTPUT_OF)), ids=lambda o: ">".join(o))
async def test_any_order_of_the_three_streams_ends_in_the_same_bindings(
        substrate: Any, pool: Any, bus: KinesisBus, small_world: Path, tmp_path: Path,
        order: tuple[str, str, str]) -> None:
    """Context before or after the anchor, in every order: readiness says what is missing at each
    step, and the end state is the offline join; hits when the anchor comes last, late joins otherwise."""
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, OUTPUT_OF)
    run = scope.run_id
    datas = world_envelopes(small_world, run)
    flows = [r["flow_id"] for r in rows(offline.flow_bindings(*offline_frames(small_world)))]
    actor = ContextStoreFlowBinding()
    applied: set[str] = set()
    async with LocalActor(scope.settings, actor, run, pool, bus):
        for logical in order:
            await wait_applied(pool, run, await put(bus, scope.settings.streams.name(logical), datas[logical]))
            applied.add(PART_OF[logical])
            if "flow_anchor" not in applied:
                expected: tuple[str, ...] = ("flow_anchor",)
            else:
                expected = tuple(p for p in ("arrival_event", "arrival_entities") if p not in applied)
            ready = await join_readiness(pool, run, flows)
            assert {r.missing for r in ready.values()} == {expected}, logical
            assert {r.readiness for r in ready.values()} == {Readiness.WAITING if expected else Readiness.COMPLETE}
            page = await completed_since(pool, run, 0)
            assert len(page.flow_ids) == (len(flows) if not expected else 0)
    await assert_equals_offline(pool, run, *offline_frames(small_world))
    m = actor.metrics()
    anchor_last = order[-1] == "flow_anchor_fraud"
    assert (m["join_hits"], m["late_joins"], m["join_misses"]) == (
        (len(flows), 0, 0) if anchor_last else (0, len(flows), 0))
    assert m["bindings_total"] == len(flows)


async def test_several_flows_on_one_join_key_and_a_uint64_merchant(
        substrate: Any, pool: Any, bus: KinesisBus, small_world: Path, tmp_path: Path) -> None:
    """A second (and third) flow on one arrival is bound like the first, in one batch or later; a
    merchant id above 2^63 (a real engine's UInt64) keeps its value."""
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, OUTPUT_OF)
    run = scope.run_id
    datas = {k: v[:6] for k, v in world_envelopes(small_world, run).items()}
    big = 2**64 - 7
    # Arrival 5 and its flow moved to a merchant id above 2^63, all three parts.
    for logical in OUTPUT_OF:
        datas[logical][5] = envelope_with(datas[logical][5], merchant_id=big)
    anchors = datas["flow_anchor_fraud"]
    first = json.loads(anchors[0])["payload"]
    second = envelope_with(anchors[0], flow_id=first["flow_id"] + 1)
    third = envelope_with(anchors[1], flow_id=json.loads(anchors[1])["payload"]["flow_id"] + 1)
    actor = ContextStoreFlowBinding()
    async with LocalActor(scope.settings, actor, run, pool, bus):
        # The second flow of arrival 0 in the same batch as the first, before any context.
        await wait_applied(pool, run, await put(bus, scope.settings.streams.name("flow_anchor_fraud"),
                                                [*anchors, second]))
        await wait_applied(pool, run, await put_all(
            bus, scope.settings, {k: v for k, v in datas.items() if k != "flow_anchor_fraud"}))
        # A later flow on arrival 1, whose frame and first flow are complete already.
        await wait_applied(pool, run, await put(bus, scope.settings.streams.name("flow_anchor_fraud"), [third]))

    all_anchors = [*anchors, second, third]
    await assert_equals_offline(pool, run, payload_frame(datas["arrival_events"]),
                                payload_frame(datas["arrival_entities"]), payload_frame(all_anchors))
    moved = json.loads(datas["flow_anchor_fraud"][5])["payload"]
    frames = await fetch_join_frames(pool, run, [(first["merchant_id"], first["arrival_seq"]),
                                                 (big, moved["arrival_seq"])])
    shared = frames[JoinFrameKey(first["merchant_id"], first["arrival_seq"])]
    assert shared is not None and shared.flow_ids == tuple(sorted([first["flow_id"], first["flow_id"] + 1]))
    big_frame = frames[JoinFrameKey(big, moved["arrival_seq"])]
    assert big_frame is not None and big_frame.complete and big_frame.flow_ids == (moved["flow_id"],)
    binding = (await resolve_flow_binding(pool, run, [moved["flow_id"]]))[moved["flow_id"]]
    assert binding.complete and binding.key == JoinFrameKey(big, moved["arrival_seq"])
    m = actor.metrics()
    assert (m["bindings_total"], m["join_misses"], m["dead_letters_total"]) == (8, 0, 0)
    assert (m["join_hits"], m["late_joins"]) == (1, 7)  # only the third flow found its frame complete


async def test_replaying_the_streams_changes_nothing(
        substrate: Any, pool: Any, bus: KinesisBus, small_world: Path, tmp_path: Path) -> None:
    """Every record again on the bus (a relay re-publish), then the whole streams re-read from the
    start by a restarted actor (a replay): same state, same counters; the copies are counted."""
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, OUTPUT_OF)
    run = scope.run_id
    datas = world_envelopes(small_world, run)
    n_records = sum(len(v) for v in datas.values())
    actor = ContextStoreFlowBinding()
    async with LocalActor(scope.settings, actor, run, pool, bus):
        await wait_applied(pool, run, await put_all(bus, scope.settings, datas))
    digest, before = await state_digest(pool, run), actor.metrics()

    actor = ContextStoreFlowBinding()
    async with LocalActor(scope.settings, actor, run, pool, bus):
        await wait_applied(pool, run, await put_all(bus, scope.settings, datas))
    assert await state_digest(pool, run) == digest
    after = actor.metrics()
    assert after["duplicates_total"] == n_records
    same = ("bindings_total", "join_hits", "late_joins", "join_misses", "frames_total", "frames_complete",
            "completion_cursor", "dead_letters_total")
    assert {k: after[k] for k in same} == {k: before[k] for k in same}

    # Replay from TRIM_HORIZON: the actor's checkpoints are gone, every record is read again.
    await pool.execute("DELETE FROM rt_checkpoints WHERE actor = $1 AND platform_run_id = $2", CSFB, run)
    actor = ContextStoreFlowBinding()
    async with LocalActor(scope.settings, actor, run, pool, bus) as la:
        await wait_for(value_of(lambda: la.stats.handled), lambda n: n >= 2 * n_records,
                       what="the replay of both copies")
    assert await state_digest(pool, run) == digest
    assert {k: actor.metrics()[k] for k in same} == {k: before[k] for k in same}
    assert actor.metrics()["duplicates_total"] == 3 * n_records


async def test_a_changed_copy_is_a_recorded_mismatch_not_an_overwrite(
        substrate: Any, pool: Any, bus: KinesisBus, small_world: Path, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, OUTPUT_OF)
    run = scope.run_id
    datas = {k: v[:3] for k, v in world_envelopes(small_world, run).items()}
    entities = json.loads(datas["arrival_entities"][0])
    changed = json.loads(datas["arrival_entities"][0])
    changed["payload"]["party_id"] += 1  # same event id, other content
    actor = ContextStoreFlowBinding()
    async with LocalActor(scope.settings, actor, run, pool, bus):
        await wait_applied(pool, run, await put_all(bus, scope.settings, datas))
        digest = await state_digest(pool, run)
        acks = await put(bus, scope.settings.streams.name("arrival_entities"),
                         [json.dumps(changed, separators=(",", ":")).encode()])
        await wait_applied(pool, run, acks)
    assert await state_digest(pool, run) == digest
    frame = (await fetch_join_frames(pool, run, [(entities["payload"]["merchant_id"], 1)]))
    stored = next(iter(frame.values()))
    assert stored is not None and stored.entities is not None
    assert stored.entities.party_id == entities["payload"]["party_id"]
    dead = await pool.fetch("SELECT * FROM rt_dead_letters WHERE actor = $1 AND platform_run_id = $2", CSFB, run)
    assert [(r["event_id"], r["sequence_number"], bytes(r["data"])) for r in dead] == [
        (entities["event_id"], acks[0].sequence_number, acks[0].data)]
    assert dead[0]["reason"].startswith(f"PAYLOAD_MISMATCH: event {entities['event_id']} is held with content hash ")
    assert actor.metrics()["payload_mismatches_total"] == 1
    state, reasons = actor.health()
    assert state == "AMBER" and reasons[0].startswith("PAYLOAD_MISMATCHES: 1")


async def test_bad_records_are_dead_lettered_with_their_reason(
        substrate: Any, pool: Any, bus: KinesisBus, small_world: Path, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, OUTPUT_OF)
    run = scope.run_id
    datas = {k: v[:4] for k, v in world_envelopes(small_world, run).items()}
    anchor0 = json.loads(datas["flow_anchor_fraud"][0])["payload"]
    bad_type = json.loads(datas["arrival_events"][1])
    bad_type["payload"]["merchant_id"] = "m-1"
    bad_ts = json.loads(datas["arrival_events"][2])
    bad_ts["payload"]["ts_utc"] = "2026-01-01 00:00:00"
    bad = {
        "arrival_events": [json.dumps(bad_type).encode(), json.dumps(bad_ts).encode(),
                           # another event claiming arrival 0's arrival event
                           with_event_id(datas["arrival_events"][0], "e" * 64, channel_group="card_present")],
        "arrival_entities": [envelope_with(datas["arrival_entities"][3], party_id=2**63)],
        # an entities record on the anchor stream, and flow 0 again, anchored to another arrival
        "flow_anchor_fraud": [datas["arrival_entities"][0],
                              with_event_id(datas["flow_anchor_fraud"][1], "f" * 64, flow_id=anchor0["flow_id"])],
    }
    actor = ContextStoreFlowBinding()
    async with LocalActor(scope.settings, actor, run, pool, bus):
        await wait_applied(pool, run, await put_all(bus, scope.settings, datas))
        acks = await put_all(bus, scope.settings, bad)
        await wait_applied(pool, run, acks)
    dead = {(r["stream"], r["sequence_number"]): r["reason"] for r in await pool.fetch(
        "SELECT stream, sequence_number, reason FROM rt_dead_letters WHERE actor = $1 AND platform_run_id = $2",
        CSFB, run)}
    reasons = [dead.get((a.stream, a.sequence_number), "") for a in acks]
    assert reasons[0].startswith("INVALID_ARRIVAL_EVENT: Expected `int`, got `str` - at `$.payload.merchant_id`")
    assert reasons[1].startswith("INVALID_ARRIVAL_EVENT: payload.ts_utc: not a ts_utc")
    assert reasons[2].startswith("JOIN_FRAME_CONFLICT: arrival_event of (") and "is event" in reasons[2]
    assert reasons[3] == f"INVALID_ARRIVAL_ENTITIES: payload.party_id {2**63} is not an int64"
    assert reasons[4].startswith("UNEXPECTED_EVENT_TYPE: 's1_arrival_entities_6B' on ")
    assert reasons[5] == (f"FLOW_BINDING_CONFLICT: flow {anchor0['flow_id']} is bound by event "
                          f"{json.loads(datas['flow_anchor_fraud'][0])['event_id']}")
    assert len(dead) == 6
    # Nothing they claimed was applied; the good records were.
    await assert_equals_offline(pool, run, payload_frame(datas["arrival_events"]),
                                payload_frame(datas["arrival_entities"]), payload_frame(datas["flow_anchor_fraud"]))
    assert actor.metrics()["dead_letters_total"] == 6
    state, why = actor.health()
    assert state == "AMBER" and why == ["DEAD_LETTERS: 6 records rejected"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_waiting_bindings_readiness_notify_and_health(
        substrate: Any, pool: Any, bus: KinesisBus, small_world: Path, tmp_path: Path) -> None:
    """Anchors without context wait (WAITING, listed missing parts, AMBER then RED as they age); the
    batch that completes them notifies the channel with the new cursor; completed_since lists them once."""
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, OUTPUT_OF)
    run = scope.run_id
    datas = world_envelopes(small_world, run)
    flows = [json.loads(d)["payload"]["flow_id"] for d in datas["flow_anchor_fraud"]]
    clock = Clock()
    actor = ContextStoreFlowBinding(clock=clock)
    notes: list[str] = []

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        notes.append(payload)

    listener = await pool.acquire()
    await listener.add_listener(NOTIFY_CHANNEL, on_notify)
    try:
        async with LocalActor(scope.settings, actor, run, pool, bus):
            assert actor.health() == ("GREEN", [])  # idle, nothing waits
            await wait_applied(pool, run, await put(bus, scope.settings.streams.name("flow_anchor_fraud"),
                                                    datas["flow_anchor_fraud"]))
            ready = await join_readiness(pool, run, [*flows, 12345])
            assert ready[12345].missing == ("flow_anchor",)
            assert {ready[f].missing for f in flows} == {("arrival_event", "arrival_entities")}
            assert actor.metrics()["join_misses"] == len(flows)
            clock.now += 6
            state, reasons = actor.health()
            assert state == "AMBER" and reasons == [f"JOIN_WAIT_SLOW: {len(flows)} bindings waiting, oldest 6.0s"]
            clock.now += 25
            assert actor.health()[0] == "RED"
            await wait_applied(pool, run, await put(bus, scope.settings.streams.name("arrival_events"),
                                                    datas["arrival_events"]))
            assert (await completed_since(pool, run, 0)).flow_ids == ()
            assert notes == []
            # A waiter as the Decision Fabric would wait, with the runtime's notification waits.
            waiter = Notifications(scope.settings.postgres.dsn or "")

            async def all_complete() -> bool:
                return all(r.complete for r in (await join_readiness(pool, run, flows)).values())

            waited: list[bool] = []
            async with anyio.create_task_group() as tg:
                async def wait() -> None:
                    waited.append(await waiter.wait(NOTIFY_CHANNEL, run, all_complete, timeout=60))
                tg.start_soon(wait)
                await wait_applied(pool, run, await put(bus, scope.settings.streams.name("arrival_entities"),
                                                        datas["arrival_entities"]))
            await waiter.close()
            assert waited == [True]
            ready = await join_readiness(pool, run, flows)
            assert all(r.complete for r in ready.values())
            page = await completed_since(pool, run, 0)
            assert sorted(page.flow_ids) == sorted(flows)
            assert (await completed_since(pool, run, page.cursor)).flow_ids == ()
            await wait_for(value_of(lambda: list(notes)), lambda n: len(n) >= 1, what="a notification")
            assert notes[-1] == run
            assert (await progress(pool, run)).completion_cursor == page.cursor
            clock.now += 100
            assert actor.health() == ("GREEN", []), "nothing waits once the context is in"
            assert actor.metrics()["late_joins"] == len(flows)
    finally:
        await listener.remove_listener(NOTIFY_CHANNEL, on_notify)
        await pool.release(listener)


async def test_counters_and_waiting_survive_a_restart(
        substrate: Any, pool: Any, bus: KinesisBus, small_world: Path, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, OUTPUT_OF)
    run = scope.run_id
    datas = world_envelopes(small_world, run)
    half = len(datas["flow_anchor_fraud"]) // 2
    first = {"arrival_events": datas["arrival_events"], "arrival_entities": datas["arrival_entities"][:half],
             "flow_anchor_fraud": datas["flow_anchor_fraud"]}
    actor = ContextStoreFlowBinding()
    async with LocalActor(scope.settings, actor, run, pool, bus):
        await wait_applied(pool, run, await put_all(bus, scope.settings, first))
    before = actor.metrics()
    assert before["join_misses"] == len(datas["flow_anchor_fraud"]) - half

    restarted = ContextStoreFlowBinding()
    async with LocalActor(scope.settings, restarted, run, pool, bus):
        await wait_for(value_of(restarted.metrics), lambda m: m["bindings_total"] > 0, what="the restarted actor")
        for k in ("bindings_total", "join_hits", "late_joins", "join_misses", "frames_total", "frames_complete",
                  "completion_cursor", "applied_watermark.flow_anchor", "applied_watermark.arrival_entities"):
            assert restarted.metrics()[k] == before[k], k
        await wait_applied(pool, run, await put(bus, scope.settings.streams.name("arrival_entities"),
                                                datas["arrival_entities"][half:]))
    m = restarted.metrics()
    assert m["join_misses"] == 0 and m["join_hits"] + m["late_joins"] == m["bindings_total"]
    assert m["late_joins"] - before["late_joins"] == len(datas["flow_anchor_fraud"]) - half
    assert msgspec.json.decode(msgspec.json.encode(restarted.health_details()))["join_misses"] == 0
