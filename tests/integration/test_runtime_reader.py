"""The shared shard reader on the real substrate: start position, resume, per-shard order.

Two tests drive the runtime in this process (ShardReader -> ActorRunner -> Postgres, wired as a pack
wires it); one goes through a real pack process started with `pack_up`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support: imported here and by pack processes

from fraudrt.contracts import metrics_path
from fraudrt.runtime.packs import operate_dir, pack_down, pack_up
from tests.support.actors import Recorder
from tests.support.harness import (
    TEST_PACKS_DIR,
    LocalActor,
    SpyBus,
    by_shard,
    checkpoints,
    create_streams,
    handled,
    is_sorted_seq,
    kill_pack,
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
    async with SpyBus(settings.kinesis) as b:
        yield b


async def test_fresh_actor_starts_at_trim_horizon_and_resumes_after_its_checkpoint(
        substrate: Any, pool: Any, bus: SpyBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    before = await put(bus, stream, [record(scope.run_id, n=i) for i in range(40)])

    bus.iterator_requests.clear()
    async with LocalActor(scope.settings, Recorder(), scope.run_id, pool, bus) as first:
        await wait_for(lambda: handled(pool, scope.run_id), lambda rows: len(rows) >= 40,
                       what="the 40 records put before the actor started")
    shard = before[0].shard_id
    # No checkpoint yet: TRIM_HORIZON (after_sequence None), so records older than the actor are seen.
    assert bus.iterator_requests == [(stream, shard, None)]
    assert [r["sequence_number"] for r in await handled(pool, scope.run_id)] == [a.sequence_number for a in before]
    assert await checkpoints(pool, "test_recorder", scope.run_id) == {(stream, shard): before[-1].sequence_number}
    assert first.stats.handled == 40

    after = await put(bus, stream, [record(scope.run_id, n=100 + i) for i in range(25)])
    bus.iterator_requests.clear()
    async with LocalActor(scope.settings, Recorder(), scope.run_id, pool, bus) as second:
        await wait_for(lambda: handled(pool, scope.run_id), lambda rows: len(rows) >= 65,
                       what="the 25 records put after the checkpoint")
        await wait_for(lambda: checkpoints(pool, "test_recorder", scope.run_id),
                       lambda cps: cps.get((stream, shard)) == after[-1].sequence_number, what="checkpoint")
    # Resumed AFTER_SEQUENCE_NUMBER of the committed checkpoint: the reader fetched only the new records.
    assert bus.iterator_requests == [(stream, shard, before[-1].sequence_number)]
    assert second.readers[0].stats.records == 25
    assert second.stats.skipped_already_committed == 0
    rows = await handled(pool, scope.run_id)
    assert [r["sequence_number"] for r in rows] == [a.sequence_number for a in before + after], \
        "every record handled exactly once, in order"


async def test_each_shard_of_a_multi_shard_stream_is_handled_in_order(
        substrate: Any, pool: Any, bus: SpyBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"], shards=3)
    acks = await put(bus, stream, [record(scope.run_id, n=i) for i in range(90)])
    async with LocalActor(scope.settings, Recorder(), scope.run_id, pool, bus) as la:
        assert len(la.readers) == 3
        # More arrive while the actor is consuming, in several calls.
        for round_ in range(3):
            acks += await put(bus, stream, [record(scope.run_id, n=1000 * (round_ + 1) + i) for i in range(30)])
            await anyio.sleep(0.05)
        await wait_for(lambda: handled(pool, scope.run_id), lambda rows: len(rows) >= len(acks),
                       what=f"{len(acks)} records on 3 shards")
    expected = by_shard(acks)
    assert len([s for s in expected.values() if s]) >= 2, "records spread over several shards"
    got = by_shard(await handled(pool, scope.run_id))
    # Per shard: exactly the acknowledged records, in sequence order (no gap, no duplicate, no reorder).
    assert got == expected
    for seqs in got.values():
        assert is_sorted_seq(seqs)


async def test_pack_process_reads_from_trim_horizon_gates_runs_and_resumes(
        substrate: Any, pool: Any, bus: SpyBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", str(TEST_PACKS_DIR))
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    settings, run = scope.settings, scope.run_id
    (stream,) = await create_streams(settings, ["traffic_fraud"])
    other = mint_run_id()
    mine = await put(bus, stream, [record(run, n=i) for i in range(30)])
    foreign = await put(bus, stream, [record(other, n=i) for i in range(10)])
    try:
        started = await anyio.to_thread.run_sync(
            lambda: pack_up(settings, "test_recorder", platform_run_id=run, env=scope.env))
        assert started["state"] == "started"
        await wait_for(lambda: checkpoints(pool, "test_recorder", run),
                       lambda cps: cps.get((stream, mine[0].shard_id)) == foreign[-1].sequence_number,
                       what="checkpoint past the other run's records")
        assert [r["sequence_number"] for r in await handled(pool, run)] == [a.sequence_number for a in mine]
        assert await handled(pool, other) == []

        async def metrics() -> dict[str, Any]:
            path = metrics_path(Path(settings.runs_root), run, "test_recorder")
            try:
                counters: dict[str, Any] = json.loads(path.read_text())["counters"]
            except (OSError, ValueError):
                return {}
            return counters

        # last_metrics.json, as an operator (or the run reporter) reads it.
        counters = await wait_for(metrics, lambda c: c.get("handled_total", 0) >= 30
                                  and c.get("skipped_other_run_total", 0) >= 10, what="metrics")
        assert counters["skipped_other_run_total"] == 10
        assert counters["handled_total"] == 30

        stopped = await anyio.to_thread.run_sync(lambda: pack_down(settings, "test_recorder", timeout=30))
        assert stopped["state"] == "stopped"

        later = await put(bus, stream, [record(run, n=100 + i) for i in range(20)])
        started = await anyio.to_thread.run_sync(
            lambda: pack_up(settings, "test_recorder", platform_run_id=run, env=scope.env))
        assert started["state"] == "started"
        await wait_for(lambda: handled(pool, run), lambda rows: len(rows) >= 50, what="records put while down")

        status_file = operate_dir(settings, "test_recorder_v0") / "status" / "last_status.json"

        async def reader_records() -> int:
            try:
                status = json.loads(status_file.read_text())
            except (OSError, ValueError):
                return -1
            if status.get("pid") != started["pid"]:
                return -1
            return int(status["readers"][f"{stream}/{mine[0].shard_id}"]["records"])

        # The restarted process read only what came after its checkpoint (not again from TRIM_HORIZON).
        assert await wait_for(reader_records, lambda n: n >= 20, what="reader stats") == 20
        rows = await handled(pool, run)
        assert [r["sequence_number"] for r in rows] == [a.sequence_number for a in mine + later]
    finally:
        kill_pack(settings, "test_recorder_v0")
