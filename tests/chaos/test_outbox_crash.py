"""kill -9 between PutRecords and marking the outbox rows published: duplicate on the bus, never a gap,
and a consumer keyed on event_id ends with every event exactly once.

The pack process kills itself at that exact point (FRAUDRT_TEST_CRASH_AFTER_PUBLISH=1, a test-only hook in
OutboxRelay.publish_once), then is started again without the hook.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support: imported here and by pack processes

from fraudrt.contracts import metrics_path
from fraudrt.runtime._outbox import CRASH_AFTER_PUBLISH_ENV
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import load_pack_state, pack_down, pack_up
from tests.support.harness import (
    TEST_PACKS_DIR,
    create_streams,
    kill_pack,
    make_scope,
    open_pool,
    put,
    read_all,
    read_events,
    record,
    wait_for,
    wait_for_exit,
)

pytestmark = pytest.mark.chaos

PACK = "test_outbox_v0"
N = 300


async def test_crash_between_publish_and_mark_published_is_deduplicated_downstream(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", str(TEST_PACKS_DIR))
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    settings, run = scope.settings, scope.run_id
    upstream, downstream = await create_streams(settings, ["traffic_fraud", "rtdl"])

    async def outbox(pool: Any) -> Any:
        return await pool.fetchrow(
            "SELECT count(*) AS total, count(*) FILTER (WHERE published_at IS NULL) AS pending "
            "FROM rt_outbox WHERE owner = $1 AND stream = $2", PACK, downstream)

    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        try:
            acks = await put(bus, upstream, [record(run, n=i) for i in range(N)])
            expected = {a.event_id for a in acks}
            assert len(expected) == N
            crashing = await anyio.to_thread.run_sync(lambda: pack_up(
                settings, "test_outbox", platform_run_id=run, env={**scope.env, CRASH_AFTER_PUBLISH_ENV: "1"}))

            state = load_pack_state(settings, PACK)
            assert state is not None and state.process.pid == crashing["pid"]
            await wait_for_exit(PACK, settings, what="the pack to kill itself after its first PutRecords")
            # It died exactly between publish and mark: rows still pending, yet already on the bus.
            first = await outbox(pool)
            assert first["total"] > 0
            assert first["pending"] == first["total"], "the process died before any UPDATE marked rows published"
            on_bus = await read_all(bus, downstream)
            assert len(on_bus) == first["total"], "every row of the crashed call reached the bus"
            assert max(Counter(_event_id(r.data) for r in on_bus).values()) == 1

            restarted = await anyio.to_thread.run_sync(
                lambda: pack_up(settings, "test_outbox", platform_run_id=run, env=scope.env))
            assert restarted["pid"] != crashing["pid"]

            async def outbox_pending() -> int:
                return int((await outbox(pool))["pending"])

            await wait_for(outbox_pending, lambda n: n == 0, what="the restarted relay to publish everything")

            async def sink_count() -> int:
                return int(await pool.fetchval("SELECT count(*) FROM test_sink WHERE platform_run_id = $1", run))

            await wait_for(sink_count, lambda n: n >= N, what=f"{N} events in the sink")

            # Every distinct event can be stored before the re-published copies are read: stop only once
            # the sink's checkpoint covers every record the bus carries (originals plus re-publications).
            async def sink_consumed() -> int:
                return int(await pool.fetchval(
                    "SELECT coalesce(sum(records_total), 0) FROM rt_checkpoints "
                    "WHERE actor = 'test_dedupe_sink' AND stream = $1 AND platform_run_id = $2",
                    downstream, run))

            await wait_for(sink_consumed, lambda n: n >= N + len(on_bus),
                           what="the sink to read every record on the bus, duplicates included")
            stopped = await anyio.to_thread.run_sync(lambda: pack_down(settings, "test_outbox", timeout=30))
            assert stopped["state"] == "stopped"
        finally:
            kill_pack(settings, PACK)

        # The bus carried duplicates (the re-published rows), never a gap.
        carried = Counter(_event_id(r.data) for r in await read_all(bus, downstream))
        assert set(carried) == expected, "every event reached the bus"
        duplicated = {e for e, n in carried.items() if n > 1}
        assert len(duplicated) == len(on_bus), "exactly the rows published before the crash went out twice"
        assert max(carried.values()) == 2
        # The consumer's state: each event exactly once, although it read some twice.
        rows = await pool.fetch("SELECT event_id FROM test_sink WHERE platform_run_id = $1", run)
        assert Counter(r["event_id"] for r in rows) == Counter(expected)
        # The pass-through handled each upstream record once: its checkpoint was committed with the rows.
        assert (await outbox(pool))["total"] == N
        # And the consumer did meet those duplicates: it received that many more records than it stored.
        counters = json.loads(metrics_path(Path(settings.runs_root), run, "test_dedupe_sink").read_text())["counters"]
        assert counters["sink_received_total"] - counters["sink_inserted_total"] == len(on_bus)
        events = [e["event"] for e in read_events(
            Path(settings.runs_root) / "fraud-platform" / run / "operate" / PACK / "events.jsonl")]
        assert events.count("pack_started") == 2 and "pack_stopped" in events


def _event_id(data: bytes) -> str:
    event_id: str = json.loads(data)["event_id"]
    return event_id
