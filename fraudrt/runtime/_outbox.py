"""The publish outbox: rows written with an actor's state, published by one relay task per pack.

The relay takes an owner's oldest ready rows (neither published nor parked), publishes them with
the one PutRecords sender (`_sender.py`: byte and count limits, per-entry retry, order kept), and
in the same transaction marks what went out (shard, sequence number), **parks** what Kinesis will
never take (a record over 1 MiB, a bad partition key, a stream that does not exist) with the
reason, and counts an attempt with the last error on what is still failing. A parked row never
blocks the rows after it; it stays in the table, unpublished, visible in health and metrics. A row
parked because its stream did not exist is tried again after `park_retry_seconds` (the stream may
have been created since). A crash between publish and mark re-publishes on restart: the bus may
carry a duplicate, never a gap, and every consumer makes a duplicate harmless.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ._bus import KinesisBus, PutEntry
from ._classify import classify
from ._pgcolumns import pack_columns, split_sql
from ._records import Emit
from ._sender import PutRecordsSender

log = logging.getLogger("fraudrt.runtime.outbox")

# Set to "1" only by the outbox crash test: SIGKILL between PutRecords and marking the rows published.
CRASH_AFTER_PUBLISH_ENV = "FRAUDRT_TEST_CRASH_AFTER_PUBLISH"

_MARK_COLS = split_sql(3, casts=["bigint", "text", "text"])
_MARK_PUBLISHED_SQL = f"""
UPDATE rt_outbox o SET published_at = now(), shard_id = p.shard_id, sequence_number = p.seq,
                       attempts = o.attempts + 1
  FROM unnest({", ".join(_MARK_COLS)}) AS p(id, shard_id, seq)
 WHERE o.id = p.id
"""
_NOTE_COLS = split_sql(2, casts=["bigint", "text"])
_PARK_SQL = f"""
UPDATE rt_outbox o SET parked_at = now(), parked_reason = p.reason, last_error = p.reason, attempts = o.attempts + 1
  FROM unnest({", ".join(_NOTE_COLS)}) AS p(id, reason)
 WHERE o.id = p.id
"""
_FAILED_SQL = f"""
UPDATE rt_outbox o SET last_error = p.reason, attempts = o.attempts + 1
  FROM unnest({", ".join(_NOTE_COLS)}) AS p(id, reason)
 WHERE o.id = p.id
"""
_READY_SQL = """
SELECT id, stream, partition_key, data FROM rt_outbox
 WHERE owner = $1 AND published_at IS NULL AND parked_at IS NULL
 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
"""
_STATUS_SQL = """
SELECT (SELECT count(*) FROM rt_outbox WHERE owner = $1 AND published_at IS NULL AND parked_at IS NULL) AS pending,
       (SELECT extract(epoch FROM now() - min(created_at))::float8 FROM rt_outbox
         WHERE owner = $1 AND published_at IS NULL AND parked_at IS NULL) AS oldest_pending_age,
       (SELECT count(*) FROM rt_outbox WHERE owner = $1 AND published_at IS NULL AND parked_at IS NOT NULL) AS parked,
       (SELECT array_agg(DISTINCT split_part(parked_reason, ':', 1)) FROM rt_outbox
         WHERE owner = $1 AND published_at IS NULL AND parked_at IS NOT NULL) AS parked_reasons
"""
# Parked for a missing stream: try again once in a while (it may have been created since).
_UNPARK_SQL = """
UPDATE rt_outbox SET parked_at = NULL
 WHERE owner = $1 AND published_at IS NULL AND parked_at IS NOT NULL
   AND parked_at < now() - make_interval(secs => $2::float8) AND parked_reason LIKE 'ResourceNotFoundException%'
"""

# Health thresholds (seconds a ready row has waited to be published): the decision path's latency
# goal is 100 ms end to end, so a row waiting this long means the relay or the bus is stuck.
PUBLISH_LAG_AMBER_S = 10.0
PUBLISH_LAG_RED_S = 60.0


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
    parked: int = 0
    retried_entries: int = 0
    failed_rounds: int = 0
    pending: int = 0
    oldest_pending_age_s: float = 0.0
    parked_now: int = 0
    parked_reasons: list[str] = field(default_factory=list)
    last_error: str | None = None
    last_publish_at: float = 0.0


@dataclass
class OutboxRelay:
    pool: Any
    bus: KinesisBus
    owner: str
    fetch_limit: int = 2000
    idle_sleep: float = 0.2
    # How long one round keeps retrying throttled or failing entries before it gives them back.
    round_budget_seconds: float = 10.0
    park_retry_seconds: float = 300.0
    stats: RelayStats = field(default_factory=RelayStats)
    _wake: anyio.Event = field(default_factory=anyio.Event)
    _sender: PutRecordsSender | None = None
    _last_unpark: float = 0.0

    def wake(self) -> None:
        self._wake.set()

    @property
    def sender(self) -> PutRecordsSender:
        if self._sender is None:
            self._sender = PutRecordsSender(self.bus)
        return self._sender

    async def publish_once(self) -> tuple[int, int]:
        """One round over up to `fetch_limit` ready rows: (published, still failing)."""
        async with self.pool.acquire() as conn, conn.transaction():
            # SKIP LOCKED: a second relay of the same owner (should one ever run) takes other rows.
            rows = await conn.fetch(_READY_SQL, self.owner, self.fetch_limit)
            if not rows:
                return 0, 0
            by_stream: dict[str, list[Any]] = {}
            for row in rows:
                by_stream.setdefault(row["stream"], []).append(row)
            published: list[tuple[str, str, str]] = []
            parked: list[tuple[str, str]] = []
            failed: list[tuple[str, str]] = []
            deadline = time.monotonic() + self.round_budget_seconds

            async def one_stream(stream: str, stream_rows: list[Any]) -> None:
                outcomes = await self.sender.send(
                    stream, [PutEntry(bytes(r["data"]), r["partition_key"]) for r in stream_rows], deadline=deadline)
                for row, sent in zip(stream_rows, outcomes, strict=True):
                    rid = str(row["id"])
                    if sent.ok:
                        assert sent.shard_id is not None and sent.sequence_number is not None
                        published.append((rid, sent.shard_id, sent.sequence_number))
                    elif sent.rejected:
                        parked.append((rid, (sent.error or "REJECTED")[:1000]))
                    else:
                        failed.append((rid, (sent.error or "UNSENT")[:1000]))

            async with anyio.create_task_group() as tg:
                for stream, stream_rows in by_stream.items():
                    tg.start_soon(one_stream, stream, stream_rows)
            if published and os.environ.get(CRASH_AFTER_PUBLISH_ENV) == "1":
                # Test-only crash point (tests/chaos/test_outbox_crash.py): published, not yet marked.
                os.kill(os.getpid(), signal.SIGKILL)
            if published:
                await conn.execute(_MARK_PUBLISHED_SQL, *pack_columns(
                    [[p[0] for p in published], [p[1] for p in published], [p[2] for p in published]]))
            if parked:
                await conn.execute(_PARK_SQL, *pack_columns([[p[0] for p in parked], [p[1] for p in parked]]))
                for rid, reason in parked:
                    log.error("outbox row %s of %s parked: %s", rid, self.owner, reason)
            if failed:
                await conn.execute(_FAILED_SQL, *pack_columns([[f[0] for f in failed], [f[1] for f in failed]]))
        self.stats.published += len(published)
        self.stats.parked += len(parked)
        self.stats.retried_entries = self.sender.stats.retried_entries_total
        if published:
            self.stats.last_publish_at = time.time()
        if failed:
            self.stats.last_error = failed[0][1]
        return len(published), len(failed)

    async def refresh_status(self) -> RelayStats:
        """Pending and parked counts for health and metrics (index-only on the partial indexes)."""
        async with self.pool.acquire() as conn:
            if time.monotonic() - self._last_unpark >= self.park_retry_seconds:
                self._last_unpark = time.monotonic()
                await conn.execute(_UNPARK_SQL, self.owner, self.park_retry_seconds)
            row = await conn.fetchrow(_STATUS_SQL, self.owner)
        self.stats.pending = int(row["pending"])
        self.stats.oldest_pending_age_s = round(float(row["oldest_pending_age"] or 0.0), 3)
        self.stats.parked_now = int(row["parked"])
        self.stats.parked_reasons = sorted(r for r in (row["parked_reasons"] or []) if r)
        return self.stats

    def health(self) -> tuple[str, list[str]]:
        s = self.stats
        state, reasons = "GREEN", []
        if s.oldest_pending_age_s >= PUBLISH_LAG_RED_S:
            state = "RED"
            reasons.append(f"OUTBOX_STALLED: {s.pending} row(s) waiting, oldest {s.oldest_pending_age_s:.0f}s "
                           f"({s.last_error})")
        elif s.oldest_pending_age_s >= PUBLISH_LAG_AMBER_S:
            state = "AMBER"
            reasons.append(f"OUTBOX_LAGGING: {s.pending} row(s) waiting, oldest {s.oldest_pending_age_s:.0f}s "
                           f"({s.last_error})")
        if s.parked_now:
            state = "RED" if state == "RED" else "AMBER"
            reasons.append(f"OUTBOX_PARKED: {s.parked_now} row(s) Kinesis will not take "
                           f"({', '.join(s.parked_reasons)})")
        return state, reasons

    async def pending(self) -> int:
        return (await self.refresh_status()).pending

    async def run(self, stopping: anyio.Event) -> None:
        failures = 0
        while True:
            # Re-armed before the query, so a wake() during publish is not lost.
            self._wake = anyio.Event()
            try:
                published, failed = await self.publish_once()
            except Exception as exc:
                failure = classify(exc)
                if not failure.transient:
                    raise
                published, failed = 0, 1
                self.stats.last_error = f"{failure.code}: {exc}"[:500]
            if failed and not published:
                failures += 1
                self.stats.failed_rounds += 1
                delay = min(10.0, 0.2 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
                log.warning("outbox publish failing (%s); retry in %.2fs", self.stats.last_error, delay)
                with anyio.move_on_after(delay):
                    await stopping.wait()
                if stopping.is_set():
                    return
                continue
            failures = 0
            if published:
                continue
            if stopping.is_set():
                return
            with anyio.move_on_after(self.idle_sleep):
                await self._wake.wait()

    async def flush(self, timeout: float = 30.0) -> int:
        """Publish everything ready (drain on shutdown); returns rows still pending after `timeout`."""
        with anyio.move_on_after(timeout):
            while True:
                published, _failed = await self.publish_once()
                if not published:
                    break
        return await self.pending()
