"""kill -9 of a pack running rtdl_core's ArchiveWriter while it archives; after `pack up` the archive
holds every record once.

The pack is the test-only `test_archive` (ArchiveWriter + a recorder): the records here are not engine
events, which the rtdl_core projectors would rightly dead-letter; their own kill -9 test uses a world.

Records are put on three streams before, during and after the kill. Each kill lands at the moment a
segment object is written but its batch not yet committed, which is what the segment key scheme must
heal: the first by the writer's test-only crash point (SIGKILL after its Nth segment PUT), later ones
aimed from outside (SIGSTOP, look, SIGKILL), which on a fast machine may miss the window.
FRAUDRT_CHAOS_LONG=1 (nox -s chaos): ten times the records, three kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support: imported here and by pack processes

from fraudrt._daemon import is_alive
from fraudrt.rtdl.archive_writer._actor import CRASH_AFTER_SEGMENT_PUTS_ENV
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import load_pack_state, pack_down, pack_kill, pack_up
from fraudrt.substrate import bootstrap, s3_client
from tests.support.harness import Ack, kill_pack, make_scope, open_pool, put, record, wait_for, wait_for_exit

pytestmark = pytest.mark.chaos

CORE = "test_archive_v0"
LONG = os.environ.get("FRAUDRT_CHAOS_LONG") == "1"
TOTAL = 50_000 if LONG else 5_000
KILLS = 3 if LONG else 1
STREAMS = ("traffic_fraud", "arrival_events", "flow_anchor_fraud")


async def _archived(pool: Any, run: str) -> int:
    return int(await pool.fetchval(
        "SELECT coalesce(sum(record_count), 0) FROM archive_segments WHERE platform_run_id = $1", run))


async def _object_keys(s3: Any, settings: Any, run: str) -> list[str]:
    keys: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=settings.buckets.platform, Prefix=f"{run}/archive/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


async def _orphans(settings: Any, pool: Any, s3: Any, run: str) -> set[str]:
    """Segment objects of the run that no committed index row names (yet)."""
    objects = set(await _object_keys(s3, settings, run))
    committed = {r["object_key"] for r in await pool.fetch(
        "SELECT object_key FROM archive_segments WHERE platform_run_id = $1", run)}
    return objects - committed


async def _kill_between_put_and_commit(settings: Any, pool: Any, s3: Any, run: str, stale: set[str],
                                       budget: float = 3.0) -> bool:
    """SIGKILL the pack, preferably while a segment object is written but its batch not yet committed.

    Freeze the process (SIGSTOP), compare the run's segment objects with the committed index: an object
    the index does not know yet means the writer is inside that window, so kill it there; otherwise let it
    run a few milliseconds and look again. After `budget` seconds, kill wherever it is. True if caught.
    `stale`: orphans an earlier kill left, which say nothing about this process.
    """
    state = load_pack_state(settings, CORE)
    assert state is not None
    pid = state.process.pid
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        try:
            if await _orphans(settings, pool, s3, run) - stale:
                pack_kill(settings, "test_archive")
                return True
        finally:
            if is_alive(state.process):
                os.kill(pid, signal.SIGCONT)
        await anyio.sleep(random.uniform(0.0, 0.01))
    pack_kill(settings, "test_archive")
    return False


async def _read_archive(settings: Any, run: str) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every segment object under `<run>/archive/`: key -> its parsed lines."""
    segments: dict[str, list[dict[str, Any]]] = {}
    async with s3_client(settings.s3) as s3:
        keys = await _object_keys(s3, settings, run)
        for key in keys:
            obj = await s3.get_object(Bucket=settings.buckets.platform, Key=key)
            body = await obj["Body"].read()
            segments[key] = [json.loads(line) for line in body.splitlines() if line.strip()]
    return segments, keys


async def test_kill9_mid_run_then_up_archives_every_record_exactly_once(substrate: Any, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", scope.env["FRAUDRT_PACKS_DIR"])
    settings, run = scope.settings, scope.run_id
    await bootstrap(settings)
    streams = [settings.streams.name(s) for s in STREAMS]
    acks: list[Ack] = []
    per_round = TOTAL // (2 * KILLS + 1)

    async def put_round(n: int, bus: KinesisBus) -> None:
        # Round-robin over the streams, in PutRecords calls of 250.
        for start in range(0, n, 250):
            stream = streams[(len(acks) // 250) % len(streams)]
            acks.extend(await put(bus, stream, [record(run, n=len(acks) + i, pad="x" * 200)
                                                for i in range(min(250, n - start))]))

    def up(env: dict[str, str] | None = None) -> dict[str, Any]:
        return pack_up(settings, "test_archive", platform_run_id=run, env={**scope.env, **(env or {})})

    in_window: list[bool] = []
    stale: set[str] = set()
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus, s3_client(settings.s3) as s3:
        try:
            pids = []
            for kill in range(KILLS):
                floor = await _archived(pool, run)
                # The first process kills itself in the window, after its fourth segment PUT: a
                # random kill can miss it on a fast machine. Later ones are killed from outside.
                hook = {CRASH_AFTER_SEGMENT_PUTS_ENV: "4"} if kill == 0 else {}
                pids.append((await anyio.to_thread.run_sync(lambda h=hook: up(h)))["pid"])
                await put_round(per_round, bus)
                # The pack is consuming: part of the records archived, the rest still coming in.
                await wait_for(lambda: _archived(pool, run), lambda n, f=floor: n > f, what="archiving under way")
                # kill -9 while the next round is being put (the puts go on after the kill), at the
                # worst moment if we can catch it: a segment object written, its batch not committed.
                async with anyio.create_task_group() as tg:
                    tg.start_soon(put_round, per_round, bus)
                    await anyio.sleep(0.05)
                    if hook:
                        await wait_for_exit(CORE, settings, what="the self-kill")
                        in_window.append(bool(await _orphans(settings, pool, s3, run) - stale))
                    else:
                        in_window.append(await _kill_between_put_and_commit(settings, pool, s3, run, stale))
                state = load_pack_state(settings, CORE)
                assert state is not None and not is_alive(state.process), "SIGKILLed"
                stale |= await _orphans(settings, pool, s3, run)
            # Records put while no pack runs at all.
            await put_round(TOTAL - len(acks), bus)
            assert len(acks) == TOTAL
            restarted = await anyio.to_thread.run_sync(up)
            assert restarted["state"] == "started" and restarted["pid"] not in pids
            await wait_for(lambda: _archived(pool, run), lambda n: n >= TOTAL, timeout=120 if LONG else 60,
                           interval=0.25, what=f"all {TOTAL} records archived")
            stopped = await anyio.to_thread.run_sync(lambda: pack_down(settings, "test_archive", timeout=30))
            assert stopped["state"] == "stopped"
            index = await pool.fetch("SELECT * FROM archive_segments WHERE platform_run_id = $1", run)
        finally:
            kill_pack(settings, CORE)

    # At least one kill landed after a segment PUT and before its commit (the case the key scheme is for).
    assert any(in_window), "no kill caught the writer between segment PUT and commit"
    put_ids = Counter((a.stream, a.shard_id, a.sequence_number) for a in acks)
    assert len(put_ids) == TOTAL

    # The index: segments cover each acknowledged record once, nothing else.
    assert sum(r["record_count"] for r in index) == TOTAL
    # The objects: read back every segment under the run's archive prefix.
    segments, keys = await _read_archive(settings, run)
    assert sorted(keys) == sorted(r["object_key"] for r in index), "no orphan object, no missing object"
    archived = Counter((line["stream"], line["shard_id"], line["sequence_number"])
                       for lines in segments.values() for line in lines)
    doubled = [k for k, n in archived.items() if n > 1]
    missing = set(put_ids) - set(archived)
    extra = set(archived) - set(put_ids)
    assert not doubled, f"{len(doubled)} records archived twice, e.g. {doubled[:3]}"
    assert not missing, f"{len(missing)} acknowledged records missing from the archive"
    assert not extra, f"{len(extra)} archived records were never put"
    # The lines carry the records' bytes as they were put.
    by_seq = {(a.stream, a.shard_id, a.sequence_number): json.loads(a.data) for a in acks}
    for lines in segments.values():
        for line in lines[:5]:
            assert line["record"] == by_seq[(line["stream"], line["shard_id"], line["sequence_number"])]
    for row in index:
        lines = segments[row["object_key"]]
        assert len(lines) == row["record_count"]
        assert lines[0]["sequence_number"] == row["first_sequence"]
        assert lines[-1]["sequence_number"] == row["last_sequence"]
