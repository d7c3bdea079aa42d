"""The actor runner on the real substrate: the run-scope gate, poison records, checkpoint monotonicity."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from fraudrt._daemon import free_port
from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support: imported here and by pack processes

from fraudrt.runtime._checkpoint import save_checkpoints
from fraudrt.runtime._runner import UNREADABLE_REASON
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import load_checkpoints
from tests.support.actors import Recorder
from tests.support.harness import (
    LocalActor,
    checkpoints,
    create_streams,
    handled,
    make_scope,
    mint_run_id,
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


async def test_records_of_other_runs_are_skipped_counted_and_passed_by_the_checkpoint(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run, other = scope.run_id, mint_run_id()
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    # Interleaved, and the shard ends with the other run's records.
    datas = [record(run if i % 3 == 0 else other, n=i) for i in range(30)] + [record(other) for _ in range(5)]
    acks = await put(bus, stream, datas)
    mine = [a for a in acks if f'"platform_run_id":"{run}"'.encode() in a.data]
    assert len(mine) == 10

    async with LocalActor(scope.settings, Recorder(), run, pool, bus) as la:
        await wait_for(lambda: checkpoints(pool, "test_recorder", run),
                       lambda cps: cps.get((stream, acks[0].shard_id)) == acks[-1].sequence_number,
                       what="checkpoint at the last (other run's) record")
    assert [r["sequence_number"] for r in await handled(pool, run)] == [a.sequence_number for a in mine]
    assert await handled(pool, other) == [], "the other run's records were never handed to the handler"
    counters = la.stats.as_dict()
    assert counters["skipped_other_run_total"] == 25
    assert counters["handled_total"] == 10
    assert counters["seen_total"] == 35


async def test_poison_and_undecodable_records_are_dead_lettered_and_the_actor_goes_on(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    datas = ([record(run, n=i) for i in range(5)] + [record(run, poison=True)]
             + [record(run, n=10 + i) for i in range(3)] + [b'{"platform_run_id": "' + run.encode() + b'", oops']
             + [record(run, n=20 + i) for i in range(2)] + [b"[1, 2, 3]"]
             + [record(run, reject="amount is negative")] + [record(run, n=30)])
    acks = await put(bus, stream, datas)
    poison, broken, not_object, rejected = acks[5], acks[9], acks[12], acks[13]
    good = [a for a in acks if a not in (poison, broken, not_object, rejected)]

    async with LocalActor(scope.settings, Recorder(), run, pool, bus) as la:
        await wait_for(lambda: checkpoints(pool, "test_recorder", run),
                       lambda cps: cps.get((stream, acks[0].shard_id)) == acks[-1].sequence_number,
                       what="checkpoint past the poison batch")
        assert [r["sequence_number"] for r in await handled(pool, run)] == [a.sequence_number for a in good]
        dead = {r["sequence_number"]: r for r in await pool.fetch(
            "SELECT * FROM rt_dead_letters WHERE actor = 'test_recorder' AND stream = $1", stream)}
        assert set(dead) == {a.sequence_number for a in (poison, broken, not_object, rejected)}
        assert dead[poison.sequence_number]["reason"] == f"ValueError: poison record {poison.event_id}"
        assert dead[poison.sequence_number]["attempts"] == la.runner.max_attempts  # type: ignore[union-attr]
        assert dead[poison.sequence_number]["event_id"] == poison.event_id
        # Unreadable records (no run id can be read) are dead-lettered by the runner, bytes kept as they were.
        for unreadable in (broken, not_object):
            assert dead[unreadable.sequence_number]["reason"] == UNREADABLE_REASON
            assert bytes(dead[unreadable.sequence_number]["data"]) == unreadable.data
        assert dead[rejected.sequence_number]["reason"] == "REJECTED: amount is negative"
        failures = la.stats.batch_failures
        assert failures >= la.runner.max_attempts  # type: ignore[union-attr]

        # The actor goes on: later records are handled normally, in whole batches again.
        later = await put(bus, stream, [record(run, n=100 + i) for i in range(20)])
        await wait_for(lambda: handled(pool, run), lambda rows: len(rows) >= len(good) + 20,
                       what="records after the poison one")
        assert la.stats.batch_failures == failures
    rows = await handled(pool, run)
    assert [r["sequence_number"] for r in rows] == [a.sequence_number for a in good + later]
    assert la.stats.dead_lettered == 4


async def test_checkpoint_never_moves_backwards_and_compares_numerically(pool: Any) -> None:
    run = mint_run_id()
    async with pool.acquire() as conn:
        await save_checkpoints(conn, "test_cp", run, {("s", "shardId-000000000000"): ("99", 1)})
        # "100" sorts before "99" as text: the comparison must be numeric.
        await save_checkpoints(conn, "test_cp", run, {("s", "shardId-000000000000"): ("100", 2)})
        assert await load_checkpoints(conn, "test_cp", run) == {("s", "shardId-000000000000"): "100"}
        await save_checkpoints(conn, "test_cp", run, {("s", "shardId-000000000000"): ("98", 5)})
        assert await load_checkpoints(conn, "test_cp", run) == {("s", "shardId-000000000000"): "100"}
        total = await conn.fetchval("SELECT records_total FROM rt_checkpoints WHERE actor = 'test_cp' "
                                    "AND platform_run_id = $1", run)
        assert total == 3
        assert await load_checkpoints(conn, "test_cp", mint_run_id()) == {}


class _StartsWhileTheDatabaseIsDown(Recorder):
    """Its start reads state through a real client from a Postgres that is not there, `down` times."""

    def __init__(self, dead_dsn: str, down: int) -> None:
        super().__init__()
        self.dead_dsn, self.down = dead_dsn, down
        self.starts = self.stops = 0

    async def start(self, ctx: Any) -> None:
        self.starts += 1
        if self.starts <= self.down:
            await asyncpg.connect(self.dead_dsn, timeout=2)

    async def stop(self) -> None:
        self.stops += 1


async def test_a_dependency_down_while_an_actor_starts_is_waited_out_not_a_crash(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    acks = await put(bus, stream, [record(run, n=i) for i in range(10)])
    actor = _StartsWhileTheDatabaseIsDown(f"postgresql://u:p@127.0.0.1:{free_port()}/db", down=2)
    async with LocalActor(scope.settings, actor, run, pool, bus) as la:
        await wait_for(lambda: handled(pool, run), lambda rows: len(rows) == 10, what="records after the start")
        sup = la.supervision[actor.name]
        assert (sup.restarts, sup.health()[0]) == (0, "GREEN"), "an outage at start is not a crash"
        assert la.stats.dependency_failures == 2
        assert actor.starts == 3 and actor.stops == 2, "each failed start was stopped before the next"
    assert [r["sequence_number"] for r in await handled(pool, run)] == [a.sequence_number for a in acks]
