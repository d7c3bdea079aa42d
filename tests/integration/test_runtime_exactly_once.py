"""Nothing applied twice: shared readers, supervisor restarts, lost COMMIT acknowledgements; durable
timers; idempotent intake; watermarks. All on the real embedded Postgres and kinesalite.

Each of the first three tests needs the runner's at-or-below-checkpoint filter (and its reload of
the checkpoints before a retry): without them a record is handed to the handler twice.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.runtime import Batch
from fraudrt.runtime._checkpoint import save_checkpoints
from fraudrt.runtime._runner import ActorRunner
from fraudrt.runtime.bus import KinesisBus
from tests.support.actors import Deadliner, Recorder
from tests.support.harness import (
    LocalActor,
    LocalPack,
    checkpoints,
    create_streams,
    handled,
    make_scope,
    open_pool,
    put,
    record,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def pool(settings: Any) -> Any:
    async with open_pool(settings) as p:
        yield p


@pytest.fixture(scope="module")
async def bus(settings: Any) -> Any:
    async with KinesisBus(settings.kinesis) as b:
        yield b


def _once_each(rows: list[Any]) -> list[str]:
    counts = Counter(r["sequence_number"] for r in rows)
    doubled = {seq: n for seq, n in counts.items() if n > 1}
    assert not doubled, f"records applied more than once: {doubled}"
    return [r["sequence_number"] for r in rows]


async def test_two_actors_sharing_a_reader_from_different_checkpoints_apply_each_record_once(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    acks = await put(bus, stream, [record(run, n=i) for i in range(40)])
    shard = acks[0].shard_id
    # "ahead" committed the first 25 before (say, before a pack restart); "behind" has no checkpoint,
    # so the pack's one reader for the shard starts at TRIM_HORIZON and both get every record.
    async with pool.acquire() as conn:
        await save_checkpoints(conn, "ahead", run, {(stream, shard): (acks[24].sequence_number, 25)})
    async with LocalPack(scope.settings, [("behind", Recorder()), ("ahead", Recorder())], run, pool, bus) as lp:
        assert len(lp.readers) == 1 and lp.readers[0].start_after is None
        for name in ("behind", "ahead"):
            await wait_for(lambda n=name: checkpoints(pool, n, run),
                           lambda cps: cps.get((stream, shard)) == acks[-1].sequence_number, what=f"{name} done")
    assert _once_each(await handled(pool, run, "behind")) == [a.sequence_number for a in acks]
    assert _once_each(await handled(pool, run, "ahead")) == [a.sequence_number for a in acks[25:]]
    assert lp.runners["ahead"].stats.skipped_already_committed >= 25


async def test_a_supervisor_restart_after_a_commit_does_not_apply_what_was_in_hand_again(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    original = ActorRunner._committed
    crashed: list[int] = []

    def crash_once_after_commit(self: ActorRunner, work: Any, batch: Batch) -> None:
        # The batch is durable; the runner dies before it lets go of the deliveries in hand.
        if not crashed:
            crashed.append(len(work.records))
            raise RuntimeError("crash between commit and bookkeeping")
        original(self, work, batch)

    monkeypatch.setattr(ActorRunner, "_committed", crash_once_after_commit)
    acks = await put(bus, stream, [record(run, n=i) for i in range(30)])
    async with LocalActor(scope.settings, Recorder(), run, pool, bus) as la:
        await wait_for(lambda: checkpoints(pool, "test_recorder", run),
                       lambda cps: cps.get((stream, acks[0].shard_id)) == acks[-1].sequence_number, what="done")
        await wait_for(lambda: _async(la.runner.checkpoints), lambda cps: bool(cps), what="bookkeeping")
    assert crashed and crashed[0] > 0
    assert la.supervision["test_recorder"].restarts == 1
    assert _once_each(await handled(pool, run)) == [a.sequence_number for a in acks]


async def _async(value: Any) -> Any:
    return value


class _LosesCommitAcks:
    """A real pool whose next `armed` transactions commit on the server, then report a lost connection:
    what a client sees when the network drops between COMMIT and its acknowledgement."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.armed = 0
        self.lost = 0

    def acquire(self, **kw: Any) -> Any:
        outer = self

        class _Acquire:
            async def __aenter__(self) -> Any:
                self.cm = outer.pool.acquire(**kw)
                return _Conn(await self.cm.__aenter__(), outer)

            async def __aexit__(self, *exc: Any) -> Any:
                return await self.cm.__aexit__(*exc)

        return _Acquire()


class _Conn:
    def __init__(self, conn: Any, owner: _LosesCommitAcks) -> None:
        self._conn = conn
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def transaction(self) -> Any:
        real = self._conn.transaction()
        owner = self._owner

        class _Tx:
            async def __aenter__(self) -> Any:
                return await real.__aenter__()

            async def __aexit__(self, et: Any, e: Any, tb: Any) -> Any:
                result = await real.__aexit__(et, e, tb)
                if et is None and owner.armed:
                    owner.armed -= 1
                    owner.lost += 1
                    raise ConnectionResetError(104, "connection reset while awaiting the COMMIT acknowledgement")
                return result

        return _Tx()


async def test_a_lost_commit_acknowledgement_does_not_apply_the_batch_twice(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    flaky = _LosesCommitAcks(pool)
    acks = await put(bus, stream, [record(run, n=i) for i in range(25)])
    flaky.armed = 1
    async with LocalActor(scope.settings, Recorder(), run, flaky, bus) as la:
        await wait_for(lambda: checkpoints(pool, "test_recorder", run),
                       lambda cps: cps.get((stream, acks[0].shard_id)) == acks[-1].sequence_number, what="done")
        await wait_for(lambda: _async((la.stats.dependency_failures, la.runner.dependency_down_since,
                                       la.runner._in_hand)),
                       lambda v: v[0] >= 1 and v[1] is None and v[2] is None, what="the retry after the lost ack")
    assert flaky.lost == 1
    assert _once_each(await handled(pool, run)) == [a.sequence_number for a in acks]
    assert la.stats.dead_lettered == 0


async def test_durable_timers_fire_once_and_a_failed_fire_is_repeated_not_lost(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    original = Deadliner.on_timer
    failures: list[int] = []

    async def fail_first_fire(self: Deadliner, batch: Batch) -> None:
        await original(self, batch)  # rows written in the transaction ...
        if not failures:
            failures.append(len(batch.timers))
            raise ConnectionResetError(104, "lost the database mid-fire")  # ... and rolled back

    monkeypatch.setattr(Deadliner, "on_timer", fail_first_fire)
    datas = [record(run, deadline_in=0.3) for _ in range(5)]
    keep = [json.loads(d)["event_id"] for d in datas]
    cancelled = keep.pop()
    datas.append(record(run, cancel=cancelled))
    await put(bus, stream, datas)
    deadliner = Deadliner()
    async with LocalActor(scope.settings, deadliner, run, pool, bus):
        await wait_for(lambda: handled(pool, run, "test_deadliner"), lambda rows: len(rows) >= 4, timeout=30,
                       what="4 timers fired")
        left = await pool.fetchval("SELECT count(*) FROM rt_timers WHERE component = 'test_deadliner' "
                                   "AND platform_run_id = $1", run)
    rows = await handled(pool, run, "test_deadliner")
    assert sorted(r["event_id"] for r in rows) == sorted(keep), "each timer fired once; the cancelled one never"
    assert failures, "the first fire failed and was repeated"
    assert left == 0
    assert sorted(deadliner.fired) == sorted(keep)


async def test_idempotent_intake_drops_duplicates_and_records_mismatches(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    original = record(run, n=1)
    changed = json.dumps({**json.loads(original), "n": 2}, separators=(",", ":")).encode()
    others = [record(run, n=10 + i) for i in range(3)]
    # A re-published copy in the same batch, one in a later batch, and a changed copy.
    await put(bus, stream, [original, *others, original])
    deadliner = Deadliner()
    async with LocalActor(scope.settings, deadliner, run, pool, bus) as la:
        await wait_for(lambda: _async(la.stats.handled), lambda n: n >= 5, what="first batch")
        await put(bus, stream, [original, changed])
        await wait_for(lambda: _async(la.stats.seen), lambda n: n >= 7, what="second batch")
    event_id = json.loads(original)["event_id"]
    assert deadliner.taken_in.count(event_id) == 1
    assert sorted(deadliner.taken_in) == sorted([event_id] + [json.loads(o)["event_id"] for o in others])
    assert la.stats.duplicates == 2 and la.stats.mismatches == 1
    rows = await pool.fetch("SELECT * FROM rt_inbox_mismatches WHERE component = 'test_deadliner' "
                            "AND platform_run_id = $1", run)
    assert [r["event_id"] for r in rows] == [event_id]
    assert rows[0]["stored_hash"] != rows[0]["seen_hash"]


async def test_checkpoints_carry_the_event_time_watermark(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    stamps = ["2026-03-01T10:00:00.000000Z", "2026-03-01T10:00:05.000000Z", "2026-03-01T09:59:59.000000Z"]
    acks = await put(bus, stream, [record(run, ts_utc=t) for t in stamps] + [record(run, ts_utc="yesterday")])
    async with LocalActor(scope.settings, Recorder(), run, pool, bus) as la:
        await wait_for(lambda: checkpoints(pool, "test_recorder", run),
                       lambda cps: cps.get((stream, acks[0].shard_id)) == acks[-1].sequence_number, what="done")
    wm = await pool.fetchval("SELECT watermark_ts FROM rt_checkpoints WHERE actor = 'test_recorder' "
                             "AND platform_run_id = $1", run)
    assert wm == "2026-03-01T10:00:05.000000Z", "the latest canonical ts_utc; a non-canonical one is ignored"
    assert la.stats.watermarks == {f"{stream}/{acks[0].shard_id}": wm}
