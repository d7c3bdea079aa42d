"""The pack sees everything it runs: a crash-looping reader and parked outbox rows show in the health
of the components that depend on them; a shard split while the pack runs is followed (children
after parents). Real pack processes on the embedded substrate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import pack_run_dir, pack_status, pack_up
from fraudrt.substrate import kinesis_client
from tests.support.harness import (
    create_streams,
    handled,
    kill_pack,
    make_scope,
    open_pool,
    put,
    read_events,
    record,
    wait_for,
)

pytestmark = pytest.mark.e2e


async def test_a_crash_looping_reader_and_parked_outbox_rows_show_in_component_health(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", scope.env["FRAUDRT_PACKS_DIR"])
    settings = scope.settings
    traffic, rtdl = await create_streams(settings, ["traffic_fraud", "rtdl"])
    async with KinesisBus(settings.kinesis) as bus:
        await put(bus, traffic, [record(scope.run_id, n=i) for i in range(5)])
    try:
        await anyio.to_thread.run_sync(lambda: pack_up(settings, "test_health", platform_run_id=scope.run_id,
                                                       env=scope.env))

        async def status() -> dict[str, Any]:
            return pack_status(settings, "test_health")

        await wait_for(status, lambda s: s["components"] and all(c["health_state"] == "GREEN"
                                                                 for c in s["components"].values()),
                       timeout=60, what="GREEN at first")
        # The pass-through's target stream disappears: its rows are parked, with the reason, in its health.
        async with kinesis_client(settings.kinesis) as kinesis:
            await kinesis.delete_stream(StreamName=rtdl)
        async with KinesisBus(settings.kinesis) as bus:
            await put(bus, traffic, [record(scope.run_id, n=10 + i) for i in range(3)])
        report = await wait_for(status, lambda s: s["components"]["test_passthrough"]["health_state"] != "GREEN",
                                timeout=60, what="the pass-through no longer GREEN")
        passthrough = report["components"]["test_passthrough"]
        assert any(r.startswith("OUTBOX_PARKED: 3") for r in passthrough["reasons"]), passthrough
        assert report["components"]["test_recorder"]["health_state"] == "GREEN", "it emits nothing"
        # Now the stream both read disappears: the shared reader crash-loops, and both say so.
        async with kinesis_client(settings.kinesis) as kinesis:
            await kinesis.delete_stream(StreamName=traffic)
        report = await wait_for(status, lambda s: s["components"]["test_recorder"]["health_state"] == "RED",
                                timeout=120, what="the recorder RED from its reader")
        assert any(r.startswith(f"READER {traffic}/") and "CRASH_LOOP" in r
                   for r in report["components"]["test_recorder"]["reasons"]), report["components"]
        assert report["health_state"] == "RED"
        assert any(r["health_state"] == "RED" for r in report["readers"].values())
    finally:
        kill_pack(settings, "test_health_v0")


async def test_a_shard_split_while_the_pack_runs_is_followed_children_after_parents(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", scope.env["FRAUDRT_PACKS_DIR"])
    settings, run = scope.settings, scope.run_id
    (traffic,) = await create_streams(settings, ["traffic_fraud"])
    keys = [f"key-{i}" for i in range(8)]
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        before = await put(bus, traffic, [record(run, n=i) for i in range(40)], keys=[keys[i % 8] for i in range(40)])
        try:
            await anyio.to_thread.run_sync(lambda: pack_up(settings, "test_reshard", platform_run_id=run,
                                                           env=scope.env))
            await wait_for(lambda: handled(pool, run), lambda rows: len(rows) == 40, timeout=60, what="parent read")
            async with kinesis_client(settings.kinesis) as kinesis:
                parent = before[0].shard_id
                await kinesis.split_shard(StreamName=traffic, ShardToSplit=parent,
                                          NewStartingHashKey=str(2 ** 127))
                for _ in range(100):
                    summary = await kinesis.describe_stream_summary(StreamName=traffic)
                    if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                        break
                    await anyio.sleep(0.1)
            after = await put(bus, traffic, [record(run, n=100 + i) for i in range(40)],
                              keys=[keys[i % 8] for i in range(40)])
            children = {a.shard_id for a in after}
            assert parent not in children and len(children) == 2, "the records went to the two children"
            rows = await wait_for(lambda: handled(pool, run), lambda rows: len(rows) >= 80, timeout=90,
                                  what="children read")
        finally:
            kill_pack(settings, "test_reshard_v0")
    seqs = [r["sequence_number"] for r in rows]
    assert len(seqs) == len(set(seqs)) == 80, "every record once"
    # Each key's records in the order they were put: all of the parent's before any child's.
    order = {a.sequence_number: i for i, a in enumerate(before + after)}
    by_key: dict[str, list[int]] = {}
    for row in rows:
        i = order[row["sequence_number"]]
        by_key.setdefault(keys[i % 8], []).append(i)
    assert all(v == sorted(v) for v in by_key.values())
    events = read_events(pack_run_dir(settings, run, "test_reshard_v0") / "events.jsonl")
    added = [e for e in events if e["event"] == "shard_added"]
    assert {e["shard_id"] for e in added} == children and all(e["parents"] == [parent] for e in added)
