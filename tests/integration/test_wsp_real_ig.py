"""WSP against the real Ingestion Gate (in-process service), behind a proxy that fails twice with 503 +
Retry-After and then delegates: events land on Kinesis once, with ADMIT receipts; re-pushing the same
events (checkpoints dropped) comes back DUPLICATE and adds nothing to the bus."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web as web
import anyio
import asyncpg
import msgspec
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.control_ingress.ingestion_gate import IngestionGate, ig_api_key
from fraudrt.control_ingress.world_stream_producer import (
    IgRetryExhausted,
    RetryPolicy,
    StreamRequest,
    WspStats,
    stream_ready_run,
)
from fraudrt.runtime import ComponentContext, classify
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations
from fraudrt.substrate import bootstrap
from tests.integration import test_wsp_stream as _stream
from tests.integration.test_sr_ready import FRAUD_OUTPUTS, control_messages, oracle_world, ready_request
from tests.support.harness import make_scope, read_all

pytestmark = pytest.mark.integration

pool = _stream.pool  # the migrated pool fixture
STREAM_OF = {"arrival_events_5B": "arrival_events", "s1_arrival_entities_6B": "arrival_entities",
             "s3_flow_anchor_with_fraud_6B": "flow_anchor_fraud", "s3_event_stream_with_fraud_6B": "traffic_fraud"}


@contextlib.asynccontextmanager
async def real_ig(settings: Settings, run_id: str) -> AsyncIterator[str]:
    """The IG service in this process on a free port; yields its base URL."""
    assert settings.postgres.dsn
    ig_pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=1, max_size=8)
    try:
        async with ig_pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.runtime", "fraudrt.control_ingress.ingestion_gate")
        service = IngestionGate()
        ctx = ComponentContext(settings=settings, platform_run_id=run_id, pack_id="test", pool=ig_pool,
                               options={"port": 0})
        task = asyncio.create_task(service.run(ctx))
        ready = asyncio.create_task(service.ready.wait())
        await asyncio.wait([task, ready], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert service.ready.is_set(), "IG did not start"
        try:
            yield f"http://127.0.0.1:{service.port}"
        finally:
            ctx.stopping.set()
            await asyncio.wait_for(task, 30)
    finally:
        await ig_pool.close()


@contextlib.asynccontextmanager
async def failing_proxy(target: str, fail_first: int, retry_after: str) -> AsyncIterator[tuple[str, list[float]]]:
    """Answers the first `fail_first` pushes 503 + Retry-After, then forwards to `target` verbatim."""
    seen: list[float] = []
    session = aiohttp.ClientSession()

    async def handle(request: web.Request) -> web.Response:
        seen.append(time.monotonic())
        if len(seen) <= fail_first:
            return web.json_response({"error": "IG_UNHEALTHY"}, status=503, headers={"Retry-After": retry_after})
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("x-ig-api-key", "content-type")}
        async with session.post(f"{target}/v1/ingest/push", data=await request.read(), headers=headers) as resp:
            return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/ingest/push", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", seen
    finally:
        await runner.cleanup()
        await session.close()


async def bus_events(settings: Settings) -> dict[str, int]:
    async with KinesisBus(settings.kinesis) as bus:
        return {oid: len(await read_all(bus, settings.streams.name(logical))) for oid, logical in STREAM_OF.items()}


async def test_503_twice_then_real_ig_admits_once_and_repush_is_duplicate(substrate: Any, tmp_path: Path,
                                                                          pool: Any) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    await bootstrap(scope.settings)
    world = await oracle_world(scope.settings, tmp_path / "w", n_flows=8)
    await sr_ready_once(scope.settings, scope.run_id, world)
    (msg,) = await control_messages(scope.settings)

    async with real_ig(scope.settings, scope.run_id) as ig_url, failing_proxy(ig_url, 2, "1") as (proxy, seen):
        request = StreamRequest(message_id=msg.message_id, platform_run_id=scope.run_id, ready=msg.payload,
                                ig_url=proxy, api_key=ig_api_key(scope.settings), max_events_per_output=5,
                                push_batch_size=8,
                                retry=RetryPolicy(base_delay=0.05, max_delay=0.2))
        stats = WspStats()
        result = await stream_ready_run(scope.settings, pool, request, stats, anyio.Event())
        assert result.status == "STREAMED", result.reason
        assert result.emitted == dict.fromkeys(FRAUD_OUTPUTS, 5)
        assert stats.push.retries == 2 and stats.push.retry_statuses == {"503": 2}
        # One batch per output (its lane); the first two to arrive got the 503, and no retry went out
        # before Retry-After (our own backoff is 0.05-0.2 s here).
        assert len(seen) == 4 + 2 and min(seen[4:]) - max(seen[:2]) >= 0.95, seen
        assert stats.push.admitted == 20 and stats.push.duplicates == 0
        assert await bus_events(scope.settings) == dict.fromkeys(FRAUD_OUTPUTS, 5)

        # A WSP that lost its checkpoints re-pushes everything: IG answers DUPLICATE, the bus is unchanged.
        await pool.execute("DELETE FROM wsp_checkpoints WHERE platform_run_id = $1", scope.run_id)
        again = WspStats()
        replay = await stream_ready_run(scope.settings, pool, request, again, anyio.Event())
        assert replay.status == "STREAMED" and replay.emitted == dict.fromkeys(FRAUD_OUTPUTS, 5)
        assert again.push.duplicates == 20 and again.push.admitted == 0
        assert await bus_events(scope.settings) == dict.fromkeys(FRAUD_OUTPUTS, 5)


async def test_a_refused_api_key_is_retried_never_fails_the_ready_and_streams_once_fixed(
        substrate: Any, tmp_path: Path, pool: Any) -> None:
    """A 401 names the configuration, not the batch: an operator fixes the key and the READY must
    still stream in this platform run, so WSP retries it like an outage instead of failing the READY."""
    scope = make_scope(substrate, tmp_path / "runs")
    await bootstrap(scope.settings)
    world = await oracle_world(scope.settings, tmp_path / "w", n_flows=3)
    await sr_ready_once(scope.settings, scope.run_id, world)
    (msg,) = await control_messages(scope.settings)
    async with real_ig(scope.settings, scope.run_id) as ig_url:
        request = StreamRequest(message_id=msg.message_id, platform_run_id=scope.run_id, ready=msg.payload,
                                ig_url=ig_url, api_key="not-a-key",
                                retry=RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.1))
        stats = WspStats()
        with pytest.raises(Exception) as raised:  # which one is asserted below
            await stream_ready_run(scope.settings, pool, request, stats, anyio.Event())
        assert {type(e) for e in leaves(raised.value)} == {IgRetryExhausted}, repr(raised.value)
        assert classify(raised.value).transient  # the supervisor restarts the stream; nothing FAILED
        assert set(stats.push.retry_statuses) == {"401"} and stats.push.admitted == 0

        fixed = msgspec.structs.replace(request, api_key=ig_api_key(scope.settings))
        result = await stream_ready_run(scope.settings, pool, fixed, WspStats(), anyio.Event())
    assert result.status == "STREAMED", result.reason
    assert await bus_events(scope.settings) == {oid: len(rows) for oid, rows in world.rows.items()}


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for member in exc.exceptions for leaf in leaves(member)]
    return [exc]


async def sr_ready_once(settings: Settings, run_id: str, world: Any) -> None:
    from fraudrt.control_ingress.scenario_runner import sr_ready

    await sr_ready(settings, ready_request(run_id, world, f"k_{uuid.uuid4().hex[:8]}"))
