"""The governance log on the real object store: one create-only object per event, deduplicated by
its id, and `events.jsonl` compacted from them with every event exactly once, whatever several
writers and compactors do at the same time."""

from __future__ import annotations

import json
import random
import sys
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.obs_gov import governance
from fraudrt.obs_gov.governance import GovernanceError, GovernanceView, projection_key, record
from fraudrt.substrate import s3_client
from tests.support.harness import mint_run_id

pytestmark = pytest.mark.integration


async def _projection(settings: Any, run: str) -> list[dict[str, Any]]:
    async with s3_client(settings.s3) as s3:
        resp = await s3.get_object(Bucket=settings.buckets.platform, Key=projection_key(run))
        async with resp["Body"] as body:
            data = await body.read()
    return [json.loads(line) for line in data.splitlines() if line.strip()]


async def test_a_fact_recorded_twice_is_one_event_and_unknown_families_are_refused(settings: Any) -> None:
    run = mint_run_id()
    first = await record(settings, run, "RUN_READY_SEEN", source_component="world_stream_producer",
                         dedupe_key="ready_seen:abc", details={"message_id": "abc"})
    again = await record(settings, run, "run_ready_seen", source_component="world_stream_producer",
                         dedupe_key="ready_seen:abc", details={"message_id": "abc", "note": "seen again"})
    assert first is not None and again is None
    with pytest.raises(GovernanceError):
        await record(settings, run, "SOMETHING_ELSE", source_component="x", details={})
    with pytest.raises(GovernanceError):
        await record(settings, "not-a-run", "RUN_STARTED", source_component="x", details={})
    events = await governance.query(settings, run)
    assert [e.event_id for e in events] == [first.event_id]
    assert events[0].details == {"message_id": "abc"}


async def test_several_writers_and_compactors_at_once_leave_every_event_exactly_once(settings: Any) -> None:
    run = mint_run_id()
    families = ["PACK_STARTED", "PACK_STOPPED", "ANOMALY", "LABEL_CORRECTION", "CONFORMANCE_RESULT"]
    # 6 writers, each emitting 30 facts of which a third are also emitted by another writer.
    facts = [(families[i % len(families)], f"fact-{i}") for i in range(120)]
    plan = [[facts[(w * 20 + j) % len(facts)] for j in range(30)] for w in range(6)]
    created: list[str] = []
    compactions: list[bool] = []

    async def writer(items: list[tuple[str, str]]) -> None:
        async with s3_client(settings.s3) as s3:
            for family, key in items:
                event = await record(settings, run, family, source_component="test_writer", dedupe_key=key,
                                     details={"key": key}, s3=s3)
                if event is not None:
                    created.append(event.event_id)
                await anyio.sleep(random.random() * 0.01)

    async def compactor() -> None:
        view = GovernanceView(settings, run)
        async with s3_client(settings.s3) as s3:
            for _ in range(8):
                compactions.append(await view.compact(s3))
                await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        for items in plan:
            tg.start_soon(writer, items)
        tg.start_soon(compactor)
        tg.start_soon(compactor)

    distinct = {key for items in plan for _f, key in items}
    assert len(created) == len(set(created)) == len(distinct), "each fact created exactly once"
    async with s3_client(settings.s3) as s3:
        await GovernanceView(settings, run).compact(s3)
    lines = await _projection(settings, run)
    assert sorted(line["event_id"] for line in lines) == sorted(created)
    assert [(x["ts_utc"], x["event_id"]) for x in lines] == sorted((x["ts_utc"], x["event_id"]) for x in lines)
    assert any(compactions), "the compactors wrote the projection while the writers ran"
    # A compaction with nothing new does not rewrite the object.
    async with s3_client(settings.s3) as s3:
        assert await GovernanceView(settings, run).compact(s3) is False
    last = await governance.query(settings, run, limit=5)
    assert [e.event_id for e in last] == [x["event_id"] for x in lines[-5:]]
    assert {e.event_family for e in await governance.query(settings, run, family="anomaly")} == {"ANOMALY"}
