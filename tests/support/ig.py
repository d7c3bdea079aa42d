"""Ingestion Gate test helpers: envelopes, an in-process IG on a free port, `fraudrt ig serve`
processes, pushes, reading back the bus and the receipts, and a TCP proxy that can cut a dependency."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from fraudrt.config import Settings
from fraudrt.control_ingress.ingestion_gate import IngestionGate, ig_api_key
from fraudrt.runtime import ComponentContext
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations
from fraudrt.substrate import s3_client

IG_SQL = "fraudrt.control_ingress.ingestion_gate"


# ---------------------------------------------------------------- envelopes


def _hex(n: int) -> str:
    return hashlib.sha256(uuid.uuid4().bytes).hexdigest()[:n]


def new_run_id() -> str:
    # Unique per test without waiting for the wall clock to tick (the regex is what IG checks).
    return f"platform_20{uuid.uuid4().int % 10**6:06d}T{uuid.uuid4().int % 10**6:06d}Z"


def pins(run: str) -> dict[str, Any]:
    return {"platform_run_id": run, "scenario_run_id": _hex(32), "manifest_fingerprint": _hex(64),
            "parameter_hash": _hex(64), "seed": 42, "scenario_id": "baseline_v1", "run_id": _hex(32)}


def traffic(run: str, flow_id: int, **over: Any) -> dict[str, Any]:
    env = {"event_id": _hex(64), "event_type": "s3_event_stream_with_fraud_6B", "ts_utc": "2026-01-02T03:04:05.000001Z",
           **pins(run), "payload": {"flow_id": flow_id, "event_seq": 0, "event_type": "AUTH_REQUEST",
                                    "ts_utc": "2026-01-02T03:04:05.000001Z", "amount": 10.0 + flow_id,
                                    "fraud_flag": False, "campaign_id": None}}
    env.update(over)
    return env


def arrival(run: str, seq: int) -> dict[str, Any]:
    return {"event_id": _hex(64), "event_type": "arrival_events_5B", "ts_utc": "2026-01-02T03:04:05.000002Z",
            **pins(run), "payload": {"merchant_id": 1000 + seq, "arrival_seq": seq,
                                     "ts_utc": "2026-01-02T03:04:05.000002Z", "is_virtual": False}}


def decision(run: str) -> dict[str, Any]:
    p = pins(run)
    del p["run_id"]
    return {"event_id": _hex(64), "event_type": "decision_response", "schema_version": "v1",
            "ts_utc": "2026-01-02T03:04:06.000000Z", **p, "producer": "decision_fabric",
            "payload": {"decision_id": _hex(32), "decision_kind": "fraud_decision_v0", "bundle_ref": {},
                        "pins": {"platform_run_id": run}, "decided_at_utc": "2026-01-02T03:04:06.000000Z",
                        "source_event": {"event_id": _hex(64)}, "decision": {"action_kind": "ALLOW"}}}


# ---------------------------------------------------------------- harness


# ---------------------------------------------------------------- IG in this process


@dataclass
class RunningIg:
    service: IngestionGate
    url: str
    key: str
    settings: Settings
    run_id: str
    ctx: ComponentContext | None = None

    def headers(self) -> dict[str, str]:
        return {"X-IG-Api-Key": self.key}


@contextlib.asynccontextmanager
async def running_ig(settings: Settings, run_id: str, *, dsn: str | None = None,
                     options: dict[str, Any] | None = None,
                     server_settings: dict[str, str] | None = None) -> AsyncIterator[RunningIg]:
    """IG as a pack runs it, in this event loop; `server_settings` go to its pool's sessions only
    (migrations run on a plain session first)."""
    conn = await asyncpg.connect(dsn or settings.postgres.dsn)
    try:
        await apply_migrations(conn, "fraudrt.runtime", IG_SQL)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn or settings.postgres.dsn, min_size=1, max_size=8,
                                     server_settings=server_settings)
    try:
        service = IngestionGate()
        ctx = ComponentContext(settings=settings, platform_run_id=run_id, pack_id="test", pool=pool,
                               options={"port": 0, "probe_interval_seconds": 0.3, **(options or {})})
        task = asyncio.create_task(service.run(ctx))
        ready = asyncio.create_task(service.ready.wait())
        await asyncio.wait([task, ready], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert service.ready.is_set(), "IG did not start"
        try:
            yield RunningIg(service, f"http://127.0.0.1:{service.port}", ig_api_key(settings), settings, run_id, ctx)
        finally:
            ctx.stopping.set()
            await asyncio.wait_for(task, 30)
    finally:
        await pool.close()


async def push(http: aiohttp.ClientSession, ig: RunningIg, body: Any, *, raw: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    data = raw if raw is not None else json.dumps(body).encode()
    async with http.post(f"{ig.url}/v1/ingest/push", data=data,
                         headers=ig.headers() if headers is None else headers) as resp:
        text = await resp.read()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        return resp.status, parsed, resp.headers


async def stream_records(settings: Settings, stream: str) -> list[tuple[str, dict[str, Any]]]:
    """(sequence_number, envelope) of every record on a 1-shard stream, from TRIM_HORIZON."""
    out: list[tuple[str, dict[str, Any]]] = []
    async with KinesisBus(settings.kinesis) as bus:
        for shard in await bus.list_shards(stream):
            it: str | None = await bus.get_shard_iterator(stream, shard)
            for _ in range(100):  # until an empty page at the tip
                if it is None:
                    break
                res = await bus.get_records(stream, shard, it)
                out.extend((r.sequence_number, json.loads(r.data)) for r in res.records)
                if not res.records and res.millis_behind == 0:
                    break
                it = res.next_iterator
    return out


_S3_CLIENTS: dict[str, Any] = {}


async def get_object(settings: Settings, ref: str) -> dict[str, Any]:
    bucket, _, key = ref.removeprefix("s3://").partition("/")
    client = _S3_CLIENTS.get(settings.s3.endpoint_url or "")
    if client is None:
        # One client for the session: creating an aiobotocore client costs ~0.5 s.
        client = await _S3_STACK.enter_async_context(s3_client(settings.s3))
        _S3_CLIENTS[settings.s3.endpoint_url or ""] = client
    obj = await client.get_object(Bucket=bucket, Key=key)
    parsed: dict[str, Any] = json.loads(await obj["Body"].read())
    return parsed


_S3_STACK = contextlib.AsyncExitStack()


async def close_s3_clients() -> None:
    """Close the cached S3 clients (a test module's teardown)."""
    await _S3_STACK.aclose()
    _S3_CLIENTS.clear()


# ---------------------------------------------------------------- cutting a dependency


class TcpProxy:
    """127.0.0.1:<port> -> target; `cut()` drops every connection and refuses new ones until `restore()`."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()


def via_proxy(settings: Settings, variable: str, endpoint: str | None) -> tuple[TcpProxy, Any]:
    from fraudrt.config import load_settings

    parts = urlsplit(endpoint or "")
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 80)

    def settings_through(port: int) -> Settings:
        return load_settings("embedded", env={**os.environ, "FRAUDRT_STREAM_PREFIX": settings.streams.prefix,
                                              variable: f"http://127.0.0.1:{port}"})

    return proxy, settings_through


# ---------------------------------------------------------------- `fraudrt ig serve` processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve_ig(settings: Settings, run: str, port: int, extra_env: dict[str, str], *,
             log: Path | None = None, heal_lease: float | None = None) -> subprocess.Popen[bytes]:
    """`fraudrt ig serve` on `port` (heal lease: the default 60 s unless given); stderr to `log`
    when given (a pipe nobody reads would stall a process that logs much)."""
    env = {**os.environ, "FRAUDRT_STREAM_PREFIX": settings.streams.prefix, **extra_env}
    args = ["--heal-lease-seconds", str(heal_lease)] if heal_lease is not None else []
    stderr: Any = subprocess.PIPE if log is None else log.open("ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "fraudrt", "ig", "serve", "--port", str(port),
                                 "--run-id", run, *args], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    finally:
        if log is not None:
            stderr.close()


async def wait_up(http: aiohttp.ClientSession, url: str, key: str, proc: subprocess.Popen[bytes],
                  timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ig serve exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
                                 if proc.stderr else f"ig serve exited {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{url}/v1/ops/health", headers={"X-IG-Api-Key": key}) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise AssertionError("ig serve did not come up")
