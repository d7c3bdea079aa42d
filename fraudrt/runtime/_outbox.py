"""The publish outbox: rows written with an actor's state, published by one relay task per pack.

The relay publishes an owner's rows in id order with PutRecords, retries only the entries that
failed, then marks them published. A crash between publish and mark re-publishes on restart: the
bus may carry a duplicate, never a gap, and every consumer makes a duplicate harmless.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ._bus import MAX_PUT_RECORDS, KinesisBus, PutEntry
from ._errors import BusError
from ._pgcolumns import pack_columns, split_sql
from ._records import Emit

log = logging.getLogger("fraudrt.runtime.outbox")

# Set to "1" only by the outbox crash test: SIGKILL between PutRecords and marking the rows published.
CRASH_AFTER_PUBLISH_ENV = "FRAUDRT_TEST_CRASH_AFTER_PUBLISH"

_MARK_COLS = split_sql(3, casts=["bigint", "text", "text"])
_MARK_PUBLISHED_SQL = f"""
UPDATE rt_outbox o SET published_at = now(), shard_id = p.shard_id, sequence_number = p.seq
  FROM unnest({", ".join(_MARK_COLS)}) AS p(id, shard_id, seq)
 WHERE o.id = p.id
"""


async def write_outbox(conn: Any, owner: str, emits: Sequence[Emit]) -> None:
    if not emits:
        return
    await conn.copy_records_to_table(
        "rt_outbox",
        records=[(owner, e.stream, e.partition_key, e.event_id, e.data) for e in emits],
        columns=["owner", "stream", "partition_key", "event_id", "data"],
    )


@dataclass
class RelayStats:
    published: int = 0
    retried_entries: int = 0
    failed_calls: int = 0
    pending: int = 0


@dataclass
class OutboxRelay:
    pool: Any
    bus: KinesisBus
    owner: str
    fetch_limit: int = 2000
    idle_sleep: float = 0.2
    stats: RelayStats = field(default_factory=RelayStats)
    _wake: anyio.Event = field(default_factory=anyio.Event)

    def wake(self) -> None:
        self._wake.set()

    async def _publish(self, stream: str, rows: list[Any]) -> list[tuple[int, str, str]]:
        """PutRecords in chunks; returns (id, shard, seq) for every row, retrying failed entries."""
        done: list[tuple[int, str, str]] = []
        pending = rows
        attempt = 0
        while pending:
            chunk, pending = pending[:MAX_PUT_RECORDS], pending[MAX_PUT_RECORDS:]
            results = await self.bus.put_records(
                stream, [PutEntry(bytes(r["data"]), r["partition_key"]) for r in chunk]
            )
            failed = []
            for row, res in zip(chunk, results, strict=True):
                if res.ok:
                    assert res.shard_id is not None and res.sequence_number is not None
                    done.append((row["id"], res.shard_id, res.sequence_number))
                else:
                    failed.append(row)
            if failed:
                attempt += 1
                self.stats.retried_entries += len(failed)
                pending = failed + pending
                await anyio.sleep(min(5.0, 0.1 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.0))
            else:
                attempt = 0
        return done

    async def publish_once(self) -> int:
        """Publish up to `fetch_limit` pending rows; returns how many were published."""
        async with self.pool.acquire() as conn, conn.transaction():
            # SKIP LOCKED: a second relay of the same owner (should one ever run) takes other rows.
            rows = await conn.fetch(
                "SELECT id, stream, partition_key, data FROM rt_outbox "
                "WHERE owner = $1 AND published_at IS NULL ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                self.owner, self.fetch_limit,
            )
            if not rows:
                return 0
            by_stream: dict[str, list[Any]] = {}
            for row in rows:
                by_stream.setdefault(row["stream"], []).append(row)
            published: list[tuple[int, str, str]] = []
            for stream, stream_rows in by_stream.items():
                published.extend(await self._publish(stream, stream_rows))
            if published and os.environ.get(CRASH_AFTER_PUBLISH_ENV) == "1":
                # Test-only crash point (tests/chaos/test_outbox_crash.py): published, not yet marked.
                os.kill(os.getpid(), signal.SIGKILL)
            await conn.execute(
                _MARK_PUBLISHED_SQL,
                *pack_columns([[str(p[0]) for p in published], [p[1] for p in published], [p[2] for p in published]]),
            )
        self.stats.published += len(published)
        return len(published)

    async def pending(self) -> int:
        async with self.pool.acquire() as conn:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM rt_outbox WHERE owner = $1 AND published_at IS NULL", self.owner
            )
        self.stats.pending = count
        return count

    async def run(self, stopping: anyio.Event) -> None:
        failures = 0
        while True:
            # Re-armed before the query, so a wake() during publish is not lost.
            self._wake = anyio.Event()
            try:
                n = await self.publish_once()
                failures = 0
            except (BusError, OSError) as exc:
                failures += 1
                self.stats.failed_calls += 1
                delay = min(10.0, 0.2 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
                log.warning("outbox publish failed (%s); retry in %.2fs", exc, delay)
                await anyio.sleep(delay)
                continue
            if n:
                continue
            if stopping.is_set():
                return
            with anyio.move_on_after(self.idle_sleep):
                await self._wake.wait()

    async def flush(self, timeout: float = 30.0) -> int:
        """Publish everything pending (drain on shutdown); returns rows still pending after `timeout`."""
        with anyio.move_on_after(timeout):
            while await self.publish_once():
                pass
        return await self.pending()
