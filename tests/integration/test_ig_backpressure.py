"""Back-pressure at IG's door: pushes beyond the in-flight limits get 429 and Retry-After.

Pushes are held in flight by sending their headers and only part of the body (the handler waits
for the rest), so the limits are reached deterministically, however fast or loaded the machine.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from tests.support.harness import wait_for
from tests.support.ig import RunningIg, new_run_id, push, running_ig, traffic

pytestmark = pytest.mark.integration


class HeldPush:
    """A push whose body is still arriving: IG counts it in flight until `finish`."""

    def __init__(self, ig: RunningIg, body: bytes) -> None:
        self.ig = ig
        self.body = body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def start(self) -> HeldPush:
        port = int(self.ig.url.rsplit(":", 1)[1])
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        head = (f"POST /v1/ingest/push HTTP/1.1\r\nHost: 127.0.0.1\r\nX-IG-Api-Key: {self.ig.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n\r\n")
        self.writer.write(head.encode() + self.body[:10])
        await self.writer.drain()
        return self

    async def finish(self) -> int:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.body[10:])
        await self.writer.drain()
        status_line = await self.reader.readline()
        await self.reader.read()
        self.writer.close()
        return int(status_line.split()[1])


def _body(run: str, size: int) -> bytes:
    """A batch of one event, padded with whitespace to `size` bytes."""
    text = json.dumps({"events": [traffic(run, 1)]})
    assert len(text) < size
    return (text + " " * (size - len(text))).encode()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _in_flight(ig: RunningIg) -> int:
    return int(ig.service.metrics()["pushes_in_flight"])


async def test_pushes_beyond_the_limit_get_429_with_retry_after(private_streams: Settings,
                                                               http: aiohttp.ClientSession) -> None:
    async with running_ig(private_streams, new_run_id(), options={"max_pushes_in_flight": 2}) as ig:
        held = [await HeldPush(ig, _body(ig.run_id, 2_000)).start() for _ in range(2)]
        await wait_for(lambda: _in_flight(ig), lambda n: n == 2, what="two pushes in flight")
        status, body, headers = await push(http, ig, {"events": [traffic(ig.run_id, 2)]})
        assert status == 429, body
        assert body["error"] == "TOO_MANY_PUSHES" and "max_pushes_in_flight=2" in body["detail"]
        assert int(headers["Retry-After"]) >= 1
        # Lookups and health are not pushes: still served.
        async with http.get(f"{ig.url}/v1/ops/health", headers=ig.headers()) as resp:
            assert resp.status == 200
        assert [await h.finish() for h in held] == [200, 200]
        status, body, _ = await push(http, ig, {"events": [traffic(ig.run_id, 2)]})
        assert status == 200 and body["admit"] == 1, body
        assert ig.service.metrics()["pushes_refused_busy_total"] == 1
        assert ig.service.metrics()["pushes_in_flight"] == 0


async def test_bytes_beyond_the_limit_get_429_but_a_lone_big_push_goes_through(
        private_streams: Settings, http: aiohttp.ClientSession) -> None:
    async with running_ig(private_streams, new_run_id(), options={"max_bytes_in_flight": 10_000}) as ig:
        held = await HeldPush(ig, _body(ig.run_id, 8_000)).start()
        await wait_for(lambda: _in_flight(ig), lambda n: n == 1, what="a push in flight")
        status, body, headers = await push(http, ig, None, raw=_body(ig.run_id, 3_000))
        assert status == 429 and "max_bytes_in_flight=10000" in body["detail"], body
        assert int(headers["Retry-After"]) >= 1
        status, body, _ = await push(http, ig, None, raw=_body(ig.run_id, 1_500))  # fits beside it
        assert status == 200, body
        assert await held.finish() == 200
        # Alone, a push larger than the byte limit (but within max_body_bytes) is served.
        status, body, _ = await push(http, ig, None, raw=_body(ig.run_id, 20_000))
        assert status == 200, body
