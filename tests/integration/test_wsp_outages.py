"""A dependency outage never fails a READY: WSP's background task raises, the runtime's supervisor
restarts it with backoff, and the stream completes once the dependency is back.

A READY marked FAILED is lost for the platform run (a re-sent READY has the same message_id and is a
duplicate), so only a permanent fault may fail it. These tests crash a real server of the session
substrate (`outage`) and run WSP's background under the real supervisor.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.control_ingress.world_stream_producer import WorldStreamProducer, record_ready
from fraudrt.runtime import ComponentContext
from fraudrt.runtime._supervisor import Supervision, supervise
from tests.integration import test_wsp_stream as _stream
from tests.integration.test_sr_ready import control_messages
from tests.integration.test_wsp_stream import FakeIg, assert_order_at_ig, prepare
from tests.support.harness import outage, wait_for

pytestmark = pytest.mark.integration

fake_ig = _stream.fake_ig
pool = _stream.pool
log = logging.getLogger("tests.wsp_outages")


async def ready_status(pool: Any, message_id: str) -> str:
    return str(await pool.fetchval("SELECT status FROM wsp_ready_runs WHERE message_id = $1", message_id))


async def test_s3_down_when_the_facts_are_read_is_retried_by_the_supervisor_and_the_run_streams_completely(
        substrate: Any, tmp_path: Path, pool: Any, fake_ig: FakeIg) -> None:
    p = await prepare(substrate, tmp_path, pool, n_flows=10)
    settings = msgspec.structs.replace(
        p.settings, wsp=msgspec.structs.replace(p.settings.wsp, ig_url=fake_ig.url, push_batch_size=5))
    actor = WorldStreamProducer()
    ctx = ComponentContext(settings=settings, platform_run_id=p.run_id, pack_id="test", pool=pool)
    (msg,) = await control_messages(settings)
    async with pool.acquire() as conn:
        actor.note_outcome(await record_ready(conn, msg, p.run_id), msg.message_id, p.run_id)
    background = Supervision("world_stream_producer:background")

    async with outage(substrate.settings, "s3") as restart_s3, anyio.create_task_group() as tg:
        tg.start_soon(supervise, background, lambda: actor.background(ctx), ctx.stopping,
                      lambda _event, _fields: None, log)

        async def restarts() -> int:
            return background.restarts

        # The attempt fails on the facts read (S3 is down: ~18 s of the client's own retries) and goes
        # back to the supervisor, which starts the next one.
        await wait_for(restarts, lambda n: n >= 1, timeout=180, interval=0.2,
                       what="the background restarted while S3 is down")
        assert background.last_error is not None and "EndpointConnectionError" in background.last_error
        assert await ready_status(pool, msg.message_id) == "STREAMING"
        state, reasons = actor.health()
        assert state == "AMBER" and "STREAM_RETRYING" in reasons[0], reasons
        assert fake_ig.requests == 0

        await restart_s3()
        await wait_for(lambda: ready_status(pool, msg.message_id), lambda s: s != "STREAMING", timeout=180,
                       interval=0.2, what="the READY streamed after S3 came back")
        ctx.stopping.set()

    assert await ready_status(pool, msg.message_id) == "STREAMED"
    assert actor.streams_failed == 0 and actor.failed_message_id is None
    assert actor.health() == ("GREEN", [])
    # Complete, once each, each output in order.
    assert_order_at_ig(fake_ig.admitted, p.world, settings.wsp.order_window_seconds)
    assert fake_ig.decisions.count("DUPLICATE") == 0


async def test_a_facts_view_that_is_not_there_fails_the_ready_with_its_reason(
        substrate: Any, tmp_path: Path, pool: Any, fake_ig: FakeIg) -> None:
    """The permanent counterpart: a 404 is not an outage, retrying cannot create the object."""
    from fraudrt.control_ingress.world_stream_producer import WspStats, stream_ready_run
    from fraudrt.substrate import s3_client

    p = await prepare(substrate, tmp_path, pool, n_flows=3)
    async with s3_client(p.settings.s3) as s3:
        await s3.delete_object(Bucket=p.settings.buckets.platform, Key=p.ready.facts_view_ref)
    result = await stream_ready_run(p.settings, pool, _stream.request_for(p, fake_ig), WspStats(), anyio.Event())
    assert result.status == "FAILED" and result.reason is not None
    assert result.reason.startswith("RUN_FACTS_MISSING: ") and "NoSuchKey" in result.reason
    assert fake_ig.requests == 0
