"""Progress fences on the real Postgres: a waiter wakes when another component's checkpoint covers
its position (a notification at commit, from another connection), and gives up at its deadline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.runtime._fence import Notifications, ProgressFence
from fraudrt.runtime.bus import KinesisBus
from tests.support.actors import Recorder
from tests.support.harness import LocalActor, create_streams, make_scope, open_pool, put, record

pytestmark = pytest.mark.integration


async def test_a_fence_wakes_when_the_projector_commits_and_gives_up_at_its_deadline(
        substrate: Any, settings: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["traffic_fraud"])
    stamps = [f"2026-03-01T10:00:0{i}.000000Z" for i in range(5)]
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        notes = Notifications(settings.postgres.dsn)
        fence = ProgressFence(pool, notes, run)
        try:
            acks = await put(bus, stream, [record(run, ts_utc=t) for t in stamps])
            last = acks[-1]
            assert not await fence.covered("test_recorder", stream, last.shard_id, last.sequence_number)
            # Nothing applies the records yet: a bounded wait returns False, it does not hang.
            assert not await fence.wait_covered("test_recorder", stream, last.shard_id, last.sequence_number,
                                                timeout=0.5)
            results: dict[str, bool] = {}

            async def wait() -> None:
                results["covered"] = await fence.wait_covered("test_recorder", stream, last.shard_id,
                                                              last.sequence_number, timeout=60)
                results["watermark"] = await fence.wait_watermark("test_recorder", stream, stamps[-1], timeout=60)

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.2)
                async with LocalActor(scope.settings, Recorder(), run, pool, bus):
                    with anyio.fail_after(60):
                        while "watermark" not in results:
                            await anyio.sleep(0.05)
            assert results == {"covered": True, "watermark": True}
            assert await fence.watermark("test_recorder", stream) == stamps[-1]
            assert not await fence.wait_watermark("test_recorder", stream, "2026-03-01T10:00:09.000000Z", timeout=0.3)
        finally:
            await notes.close()
