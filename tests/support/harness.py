"""Helpers for tests on the real embedded substrate: run ids, records, polling, in-process actors, packs."""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import asyncpg

from fraudrt.config import Settings, project_root
from fraudrt.runtime import Actor, ComponentContext
from fraudrt.runtime._reader import Delivery, ShardReader, lowest_checkpoint
from fraudrt.runtime._runner import ActorRunner
from fraudrt.runtime._supervisor import Supervision, supervise
from fraudrt.runtime.bus import KinesisBus, PutEntry, seq_key
from fraudrt.runtime.packs import apply_migrations
from fraudrt.substrate import ensure_stream, kinesis_client, wait_active

ROOT = project_root()
TEST_PACKS_DIR = Path(__file__).parent / "packs"
MIGRATION_PACKAGES = ("fraudrt.runtime", "fraudrt.rtdl.archive_writer", "tests.support")

T = TypeVar("T")


def mint_run_id() -> str:
    """A fresh `platform_YYYYMMDDTHHMMSSZ`, random enough that tests never share one."""
    moment = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(seconds=random.randrange(60 * 365 * 86400))
    return "platform_" + moment.strftime("%Y%m%dT%H%M%SZ")


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}-"


def record(run_id: str | None, **fields: Any) -> bytes:
    """A JSON object with the two fields the reader peeks (and whatever else the test wants)."""
    doc: dict[str, Any] = {"event_id": uuid.uuid4().hex, "event_type": "test_event"}
    if run_id is not None:
        doc["platform_run_id"] = run_id
    doc.update(fields)
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Ack:
    """One acknowledged PutRecords entry."""

    stream: str
    shard_id: str
    sequence_number: str
    event_id: str | None
    data: bytes


def _event_id(data: bytes) -> str | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc.get("event_id") if isinstance(doc, dict) else None


async def put(bus: KinesisBus, stream: str, datas: Iterable[bytes], *,
              keys: Iterable[str] | None = None) -> list[Ack]:
    """PutRecords in 500s, retrying failed entries (and a call a dependency failure cut short: a
    kept-alive connection reset under load); every entry comes back acknowledged, in put order. A
    retried call may put a duplicate on the bus, as any producer's may."""
    from fraudrt.runtime import classify

    items = list(datas)
    pkeys = list(keys) if keys is not None else [uuid.uuid4().hex for _ in items]
    acks: list[Ack] = []
    for start in range(0, len(items), 500):
        pending = list(zip(items[start:start + 500], pkeys[start:start + 500], strict=True))
        for _attempt in range(20):
            try:
                results = await bus.put_records(stream, [PutEntry(d, k) for d, k in pending])
            except Exception as exc:
                if not classify(exc).transient:
                    raise
                await anyio.sleep(0.1)
                continue
            failed = []
            for (data, key), res in zip(pending, results, strict=True):
                if res.ok:
                    assert res.shard_id and res.sequence_number
                    acks.append(Ack(stream, res.shard_id, res.sequence_number, _event_id(data), data))
                else:
                    failed.append((data, key))
            if not failed:
                break
            pending = failed
            await anyio.sleep(0.1)
        else:
            raise AssertionError(f"PutRecords kept failing for {len(pending)} entries on {stream}")
    return acks


async def read_all(bus: KinesisBus, stream: str) -> list[Any]:
    """Every record on `stream` (all shards, from TRIM_HORIZON), straight from the bus."""
    out: list[Any] = []
    for shard in await bus.list_shards(stream):
        iterator = await bus.get_shard_iterator(stream, shard)
        while True:
            result = await bus.get_records(stream, shard, iterator)
            out.extend(result.records)
            if not result.records and result.millis_behind == 0:
                break
            if result.next_iterator is None:
                break
            iterator = result.next_iterator
    return out


async def create_streams(settings: Settings, logical: Iterable[str], shards: int = 1) -> list[str]:
    """Create (idempotently) the prefixed streams of `settings` for the given logical names."""
    names = [settings.streams.name(n) for n in logical]
    async with kinesis_client(settings.kinesis) as kinesis:
        for name in names:
            await ensure_stream(kinesis, name, shards)
        await wait_active(kinesis, names)
    return names


async def wait_for(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, timeout: float = 30.0,
                   interval: float = 0.1, what: str = "condition") -> T:
    """Poll `probe` until `done(value)`; fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {value!r}")
        await anyio.sleep(interval)


async def wait_for_exit(pack_id: str, settings: Settings, *, what: str, timeout: float = 30.0) -> None:
    """Wait until the process recorded for `pack_id` has exited (a test-only crash point fired)."""
    from fraudrt._daemon import is_alive
    from fraudrt.runtime.packs import load_pack_state

    state = load_pack_state(settings, pack_id)
    assert state is not None, f"no pack state for {pack_id}"

    async def alive() -> bool:
        return is_alive(state.process)

    await wait_for(alive, lambda a: not a, timeout=timeout, what=what)


# --------------------------------------------------------------------------- Postgres


@asynccontextmanager
async def open_pool(settings: Settings) -> Any:
    assert settings.postgres.dsn, "the embedded substrate gives a DSN"
    pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=1, max_size=6)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, *MIGRATION_PACKAGES)
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def scratch_database(settings: Settings, label: str) -> Any:
    """The DSN of a new, empty database, dropped afterwards: for tests whose statements see the
    whole of a table (a migration, a walk over all ids), which other tests share in the main one."""
    assert settings.postgres.dsn, "the embedded substrate gives a DSN"
    db = f"{label}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(settings.postgres.dsn)
    await admin.execute(f"CREATE DATABASE {db}")
    try:
        yield settings.postgres.dsn.rsplit("/", 1)[0] + "/" + db
    finally:
        await admin.execute(f"DROP DATABASE {db} WITH (FORCE)")
        await admin.close()


async def handled(pool: Any, run_id: str, actor: str = "test_recorder") -> list[Any]:
    """Rows of `test_handled` for the run, in the order they were committed."""
    return list(await pool.fetch(
        "SELECT stream, shard_id, sequence_number, event_id FROM test_handled "
        "WHERE platform_run_id = $1 AND actor = $2 ORDER BY id", run_id, actor))


async def checkpoints(pool: Any, actor: str, run_id: str) -> dict[tuple[str, str], str]:
    rows = await pool.fetch("SELECT stream, shard_id, sequence_number FROM rt_checkpoints "
                            "WHERE actor = $1 AND platform_run_id = $2", actor, run_id)
    return {(r["stream"], r["shard_id"]): r["sequence_number"] for r in rows}


def covers(cps: dict[tuple[str, str], str], acks: Iterable[Ack]) -> bool:
    """True if the checkpoints `cps` are at or past every acknowledged record in `acks`."""
    last: dict[tuple[str, str], str] = {}
    for a in acks:
        key = (a.stream, a.shard_id)
        if key not in last or seq_key(a.sequence_number) > seq_key(last[key]):
            last[key] = a.sequence_number
    return all(k in cps and seq_key(cps[k]) >= seq_key(s) for k, s in last.items())


async def wait_checkpoints(pool: Any, actor: str, run_id: str, acks: Iterable[Ack], *, timeout: float = 90.0) -> None:
    """Until `actor`'s checkpoints for the run cover the last of `acks` on each shard (handled or dead-lettered)."""
    acks = list(acks)
    await wait_for(lambda: checkpoints(pool, actor, run_id), lambda cps: covers(cps, acks), timeout=timeout,
                   what=f"{actor}'s checkpoints at the last record put")


# --------------------------------------------------------------------------- in-process actor


class SpyBus(KinesisBus):
    """The real bus client, remembering where each shard iterator was asked to start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.iterator_requests: list[tuple[str, str, str | None]] = []

    async def get_shard_iterator(self, stream: str, shard_id: str, *, after_sequence: str | None = None,
                                 at_sequence: str | None = None) -> str:
        self.iterator_requests.append((stream, shard_id, after_sequence))
        return await super().get_shard_iterator(stream, shard_id, after_sequence=after_sequence,
                                                at_sequence=at_sequence)


class LocalPack:
    """Run actors in this process wired the way a pack wires them: one ShardReader per shard of each
    subscribed stream, shared by every actor that subscribes to it and started after the lowest of
    their checkpoints, feeding one ActorRunner per actor that commits to Postgres. Use as
    `async with LocalPack(...) as lp:`; leaving drains (stopping event) and waits."""

    def __init__(self, settings: Settings, actors: list[tuple[str, Actor]], run_id: str, pool: Any,
                 bus: KinesisBus, *, pack_id: str = "test_in_process", queue_depth: int = 4) -> None:
        self.settings = settings
        self.actors = actors
        self.bus = bus
        self.run_id = run_id
        self.pool = pool
        self.pack_id = pack_id
        self.stopping = anyio.Event()
        self.queue_depth = queue_depth
        self.runners: dict[str, ActorRunner] = {}
        self.readers: list[ShardReader] = []
        self.supervision: dict[str, Supervision] = {}
        self.events: list[Any] = []
        self._tg: Any = None

    async def __aenter__(self) -> LocalPack:
        subs: dict[str, list[tuple[ActorRunner, Any]]] = {}
        for name, actor in self.actors:
            ctx = ComponentContext(settings=self.settings, platform_run_id=self.run_id, pack_id=self.pack_id,
                                   pool=self.pool, component=name, stopping=self.stopping)
            send, receive = anyio.create_memory_object_stream[Delivery](max_buffer_size=self.queue_depth)
            runner = ActorRunner(actor, ctx, receive, relay=None)
            await runner.load()
            self.runners[name] = runner
            for stream in actor.subscriptions(self.settings):
                subs.setdefault(stream, []).append((runner, send))
        for stream, entries in subs.items():
            for shard in await self.bus.list_shards(stream):
                start = lowest_checkpoint([r.checkpoints.get((stream, shard)) for r, _ in entries])
                self.readers.append(ShardReader(self.bus, stream, shard, [s for _, s in entries], start))
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        for name, runner in self.runners.items():
            # Supervised as in a pack: a runner that raises is restarted, keeping what it had in hand.
            self.supervision[name] = sup = Supervision(name, must_run=True)
            self._tg.start_soon(supervise, sup, runner.run, self.stopping, lambda e, d: self.events.append((e, d)),
                                logging.getLogger(f"tests.{name}"))
        for reader in self.readers:
            self._tg.start_soon(reader.run, self.stopping)
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        self.stopping.set()
        result: bool | None = await self._tg.__aexit__(*exc)
        return result


class LocalActor(LocalPack):
    """One actor in a `LocalPack`, named by its class's `name`."""

    def __init__(self, settings: Settings, actor: Actor, run_id: str, pool: Any, bus: KinesisBus,
                 *, pack_id: str = "test_in_process", queue_depth: int = 4) -> None:
        super().__init__(settings, [(actor.name, actor)], run_id, pool, bus, pack_id=pack_id,
                         queue_depth=queue_depth)
        self.actor = actor

    @property
    def runner(self) -> ActorRunner:
        return self.runners[self.actor.name]

    @property
    def ctx(self) -> ComponentContext:
        return self.runner.ctx

    @property
    def stats(self) -> Any:
        return self.runner.stats


def by_shard(rows: Iterable[Any]) -> dict[str, list[str]]:
    """shard_id -> sequence numbers, in the given order (Ack or Record rows)."""
    out: dict[str, list[str]] = {}
    for row in rows:
        shard = row.shard_id if hasattr(row, "shard_id") else row["shard_id"]
        seq = row.sequence_number if hasattr(row, "sequence_number") else row["sequence_number"]
        out.setdefault(shard, []).append(seq)
    return out


def is_sorted_seq(seqs: list[str]) -> bool:
    return all(seq_key(a) < seq_key(b) for a, b in itertools.pairwise(seqs))


# --------------------------------------------------------------------------- pack processes


def pack_env(settings_env: Mapping[str, str], *, test_packs: bool = False, **extra: str) -> dict[str, str]:
    """The whole environment for a pack process (and the CLI) that resolves to `settings_env`'s settings."""
    env = {**os.environ, **settings_env, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.pop("PLATFORM_RUN_ID", None)
    if test_packs:
        env["FRAUDRT_PACKS_DIR"] = str(TEST_PACKS_DIR)
    else:
        env.pop("FRAUDRT_PACKS_DIR", None)
    return env


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Scope:
    """One test's private corner of the session substrate: stream prefix, runs root, run id."""

    settings: Settings
    env: dict[str, str]
    prefix: str
    run_id: str


def make_scope(substrate: Any, runs_root: Path, *, test_packs: bool = False) -> Scope:
    prefix = new_prefix()
    overrides = {"FRAUDRT_STREAM_PREFIX": prefix, "FRAUDRT_RUNS_ROOT": str(runs_root)}
    settings = substrate.settings_for(**overrides)
    env = pack_env({**substrate.env, **overrides}, test_packs=test_packs)
    return Scope(settings, env, prefix, mint_run_id())


def kill_pack(settings: Settings, pack_id: str) -> None:
    """SIGKILL a pack process recorded in `settings`' operate dir, if it still runs (test teardown)."""
    from fraudrt._daemon import kill
    from fraudrt.runtime.packs import load_pack_state

    state = load_pack_state(settings, pack_id)
    if state is not None:
        kill(state.process)


# --------------------------------------------------------------------------- dependency outages


def stop_service(settings: Settings, name: str) -> None:
    """Stop one server of the (session) embedded substrate the way an outage would: abruptly (SIGKILL,
    no goodbye to its clients), and gone with its ports (the kill returns before the process has let
    go of them). A graceful SeaweedFS stop would also cost ~15 s before weed acts on SIGINT."""
    from fraudrt._daemon import is_alive, kill, port_in_use
    from fraudrt.substrate._launcher import load_state

    svc = load_state(settings).services[name]
    kill(svc.process)
    deadline = time.monotonic() + 30
    while is_alive(svc.process) or any(port_in_use(p) for p in svc.ports.values()):
        assert time.monotonic() < deadline, f"{name} still holds its ports 30 s after it was stopped"
        time.sleep(0.1)


async def start_services(settings: Settings) -> None:
    """Start again whatever server of the substrate is down, on its old ports and data, and return
    once each serves requests (SeaweedFS answers its port before it serves reads: 500 InternalError)."""
    from fraudrt.substrate import up

    await up(settings, fast_pg=True)
    await wait_for(lambda: _s3_serves(settings), bool, timeout=60, interval=0.2, what="s3 serving reads")


async def _s3_serves(settings: Settings) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    from fraudrt.substrate import s3_client

    key = "_harness/restart-probe"
    try:
        async with s3_client(settings.s3) as s3:
            await s3.put_object(Bucket=settings.buckets.platform, Key=key, Body=b"ok")
            resp = await s3.get_object(Bucket=settings.buckets.platform, Key=key)
            async with resp["Body"] as body:
                return bool(await body.read() == b"ok")
    except (BotoCoreError, ClientError):
        return False


@asynccontextmanager
async def outage(settings: Settings, name: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """`name` ("s3", "kinesis", "postgres") is down inside the block, and up again after it, whatever
    happens. Yields `restart`, to bring it back before the block ends (a test that checks recovery)."""
    await anyio.to_thread.run_sync(lambda: stop_service(settings, name))

    async def restart() -> None:
        await start_services(settings)

    try:
        yield restart
    finally:
        with anyio.CancelScope(shield=True):
            await start_services(settings)
