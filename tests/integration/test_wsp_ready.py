"""WSP's READY consumption through the real runtime (shard reader + actor runner + Postgres commit):
a READY seen twice streams once, a READY of another platform run is ignored and counted, and the
one-shot consumer does the same work in-process."""

from __future__ import annotations

import logging
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.control_ingress.scenario_runner import sr_ready
from fraudrt.control_ingress.world_stream_producer import (
    ReadyConsumerOnceRequest,
    WorldStreamProducer,
    ready_consumer_once,
)
from fraudrt.runtime.bus import KinesisBus
from tests.integration import test_wsp_stream as _stream
from tests.integration.test_sr_ready import oracle_world, ready_request
from tests.integration.test_wsp_stream import FakeIg
from tests.support.harness import LocalActor, create_streams, make_scope, wait_for

pytestmark = pytest.mark.integration

# The stand-in IG and the migrated pool are the stream tests' fixtures.
fake_ig = _stream.fake_ig
pool = _stream.pool


def with_ig(settings: Settings, url: str) -> Settings:
    return msgspec.structs.replace(settings, wsp=msgspec.structs.replace(settings.wsp, ig_url=url, push_batch_size=7))


async def ready_rows(db: Any, run_id: str) -> list[Any]:
    return list(await db.fetch("SELECT message_id, status, emitted::text AS emitted FROM wsp_ready_runs "
                                 "WHERE platform_run_id = $1", run_id))


async def test_duplicate_ready_is_skipped_and_another_runs_ready_is_ignored(
        substrate: Any, tmp_path: Path, pool: Any, fake_ig: FakeIg, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fraudrt.world_stream_producer")
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, ["control"])
    world = await oracle_world(scope.settings, tmp_path / "w", n_flows=5)
    other_run = "platform_20990101T000000Z"
    key = f"k_{uuid.uuid4().hex[:8]}"
    first = await sr_ready(scope.settings, ready_request(scope.run_id, world, key))
    again = await sr_ready(scope.settings, ready_request(scope.run_id, world, key, reuse=True))
    assert again.message_id == first.message_id
    await sr_ready(scope.settings, ready_request(other_run, world, f"k_{uuid.uuid4().hex[:8]}"))
    settings = with_ig(scope.settings, fake_ig.url)
    total = sum(len(rows) for rows in world.rows.values())

    actor = WorldStreamProducer()
    async with (KinesisBus(settings.kinesis) as bus, LocalActor(settings, actor, scope.run_id, pool, bus) as la,
                anyio.create_task_group() as tg):
        tg.start_soon(actor.background, la.ctx)
        rows = await wait_for(lambda: ready_rows(pool, scope.run_id),
                              lambda rs: bool(rs) and rs[0]["status"] == "STREAMED", timeout=60,
                              what="READY streamed")
        assert len(rows) == 1 and rows[0]["message_id"] == first.message_id
        await wait_for(lambda: _value(actor.ready_duplicate), lambda n: n == 1, what="duplicate counted")
        assert la.stats.skipped_other_run == 1  # the runtime's run gate, counted
        requests = fake_ig.requests

        # SR re-emits while WSP runs: recorded as a duplicate, nothing streamed again.
        await sr_ready(scope.settings, ready_request(scope.run_id, world, key, reuse=True))
        await wait_for(lambda: _value(actor.ready_duplicate), lambda n: n == 2, what="second duplicate")
        la.ctx.stopping.set()
    assert fake_ig.requests == requests
    assert len(fake_ig.admitted) == total and fake_ig.decisions.count("DUPLICATE") == 0
    assert f"WSP READY duplicate skipped message_id={first.message_id}" in caplog.text
    assert await ready_rows(pool, other_run) == []
    metrics = actor.metrics()
    assert metrics["ready_recorded_total"] == 1 and metrics["ready_duplicate_total"] == 2
    assert metrics["stream_emitted_total"] == total and actor.health() == ("GREEN", [])


async def test_one_shot_consumer_streams_once_then_only_sees_duplicates(
        substrate: Any, tmp_path: Path, pool: Any, fake_ig: FakeIg) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, ["control"])
    world = await oracle_world(scope.settings, tmp_path / "w", n_flows=6)
    ready = await sr_ready(scope.settings, ready_request(scope.run_id, world, f"k_{uuid.uuid4().hex[:8]}"))
    settings = with_ig(scope.settings, fake_ig.url)

    first = await ready_consumer_once(settings, ReadyConsumerOnceRequest(platform_run_id=scope.run_id,
                                                                         max_events_per_output=4))
    assert first.ready_recorded == 1 and first.ready_duplicate == 0
    assert [s.status for s in first.streams] == ["STREAMED"]
    assert set(first.streams[0].emitted.values()) == {4} and len(fake_ig.admitted) == 16

    second = await ready_consumer_once(settings, ReadyConsumerOnceRequest(platform_run_id=scope.run_id))
    assert (second.ready_recorded, second.ready_duplicate, second.streams) == (0, 1, [])
    assert len(fake_ig.admitted) == 16
    log = (Path(settings.runs_root) / "fraud-platform" / scope.run_id / "operate" / "local_parity_control_ingress_v0"
           / "logs" / "wsp_ready_consumer.log").read_text()
    assert "WSP stream start" in log and "emitted=4" in log and "WSP stream stop" in log
    assert f"WSP READY duplicate skipped message_id={ready.message_id}" in log


async def _value(n: int) -> int:
    return n


async def test_cli_ready_consumer_once_streams_with_the_env_cap(substrate: Any, tmp_path: Path, pool: Any,
                                                                fake_ig: FakeIg) -> None:
    import json
    import subprocess

    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, ["control"])
    world = await oracle_world(scope.settings, tmp_path / "w", n_flows=5)
    await sr_ready(scope.settings, ready_request(scope.run_id, world, f"k_{uuid.uuid4().hex[:8]}"))
    env = {**scope.env, "PLATFORM_RUN_ID": scope.run_id, "IG_INGEST_URL": fake_ig.url,
           "WSP_MAX_EVENTS_PER_OUTPUT": "3"}

    def once(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fraudrt", "wsp", "ready-consumer", "--once", *extra], env=env,
                              cwd=project_root(), capture_output=True, text=True, timeout=120)

    first = await anyio.to_thread.run_sync(once)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["ready_recorded"] == 1 and [s["status"] for s in out["streams"]] == ["STREAMED"]
    assert len(fake_ig.admitted) == 12  # 3 per output, from WSP_MAX_EVENTS_PER_OUTPUT
    second = await anyio.to_thread.run_sync(lambda: once("--max-events-per-output", "5"))
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["ready_duplicate"] == 1 and len(fake_ig.admitted) == 12
    refused = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "fraudrt", "wsp", "ready-consumer"], env=env, cwd=project_root(),
        capture_output=True, text=True, timeout=60))
    assert refused.returncode != 0 and "pack up control_ingress" in refused.stderr
