"""Drive one actor: coalesce deliveries, gate by run, commit state + outbox + checkpoint together.

Poison records: when a batch fails `max_attempts` times it is replayed one record at a time; a
record that still fails goes to `rt_dead_letters` with its reason in the same transaction that
moves the checkpoint past it. A checkpoint never passes a record that was neither handled nor
dead-lettered.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ._actor import Actor, Batch, ComponentContext
from ._checkpoint import CheckpointKey, is_after, load_checkpoints, save_checkpoints
from ._errors import FraudrtRuntimeError
from ._outbox import OutboxRelay, write_outbox
from ._reader import Delivery
from ._records import InboundRecord


def is_transient(exc: BaseException) -> bool:
    """A dependency failing (network, database connection, throttling), not the record: never dead-letter."""
    import asyncpg
    import botocore.exceptions

    if isinstance(exc, FraudrtRuntimeError):
        return exc.retriable
    if isinstance(exc, OSError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError
                  | botocore.exceptions.HTTPClientError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return getattr(exc, "sqlstate", None) in {"40001", "40P01", "57P01", "53300"}
    if isinstance(exc, botocore.exceptions.ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        code = exc.response.get("Error", {}).get("Code")
        return int(meta.get("HTTPStatusCode") or 0) >= 500 or code in {
            "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"}
    return False


UNREADABLE_REASON = "UNREADABLE_RECORD: not a JSON object carrying platform_run_id (top level or payload)"


@dataclass
class ActorStats:
    seen: int = 0
    handled: int = 0
    skipped_other_run: int = 0
    skipped_already_committed: int = 0
    dead_lettered: int = 0
    batches: int = 0
    batch_failures: int = 0
    emitted: int = 0
    last_commit_at: float = 0.0
    lag_ms: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seen_total": self.seen, "handled_total": self.handled,
            "skipped_other_run_total": self.skipped_other_run,
            "skipped_already_committed_total": self.skipped_already_committed,
            "dead_lettered_total": self.dead_lettered, "batches_total": self.batches,
            "batch_failures_total": self.batch_failures, "emitted_total": self.emitted,
            "lag_ms": dict(self.lag_ms),
        }


class ActorRunner:
    def __init__(self, actor: Actor, ctx: ComponentContext, inbox: MemoryObjectReceiveStream[Delivery],
                 relay: OutboxRelay | None, *, max_attempts: int = 3) -> None:
        self.actor = actor
        self.ctx = ctx
        self.inbox = inbox
        self.relay = relay
        self.max_attempts = max_attempts
        self.stats = ActorStats()
        self.checkpoints: dict[CheckpointKey, str] = {}
        self._in_hand: list[Delivery] | None = None
        # The manifest's name: two entries of one class keep separate checkpoints and inbox rows.
        self.component = ctx.component or actor.name
        self.log = logging.getLogger(f"fraudrt.{self.component}")

    async def load(self) -> dict[CheckpointKey, str]:
        async with self.ctx.pool.acquire() as conn:
            self.checkpoints = await load_checkpoints(conn, self.component, self.ctx.platform_run_id)
        return self.checkpoints

    async def _next_batch(self) -> list[Delivery] | None:
        """Wait for one delivery, then take whatever else is queued, up to the actor's batch size."""
        with anyio.move_on_after(0.5):
            first = await self.inbox.receive()
            batch, total = [first], len(first.records)
            while total < self.actor.max_batch:
                try:
                    more = self.inbox.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                batch.append(more)
                total += len(more.records)
            return batch
        return None

    async def run(self) -> None:
        await self.load()
        await self.actor.start(self.ctx)
        try:
            while not self.ctx.stopping.is_set():
                # Deliveries taken off the queue stay in hand until committed: if this run crashes,
                # the restarted run processes them again (already-committed records are dropped by
                # checkpoint), because the shared reader has moved on and will not re-send them.
                deliveries = self._in_hand or await self._next_batch()
                if deliveries:
                    self._in_hand = deliveries
                    # Shielded: a drain request never interrupts a commit half way.
                    with anyio.CancelScope(shield=True):
                        await self._process(deliveries)
                    self._in_hand = None
        finally:
            with anyio.CancelScope(shield=True):
                await self.actor.stop()

    async def _process(self, deliveries: Sequence[Delivery]) -> None:
        fresh: list[InboundRecord] = []
        # Advanced as records are accepted, so a reader restart that re-delivers a range already
        # queued cannot put the same record into one batch twice.
        high: dict[CheckpointKey, str | None] = {}
        for d in deliveries:
            self.stats.lag_ms[d.stream] = d.millis_behind
            key = (d.stream, d.shard_id)
            cp = high.get(key, self.checkpoints.get(key))
            for r in d.records:
                if is_after(r.sequence_number, cp):
                    fresh.append(r)
                    cp = r.sequence_number
                else:
                    self.stats.skipped_already_committed += 1
            high[key] = cp
        if not fresh:
            return
        self.stats.seen += len(fresh)
        work = [r for r in fresh if r.platform_run_id == self.ctx.platform_run_id]
        # A record whose run cannot be read cannot be scoped: dead-letter it, never skip it silently.
        unreadable = [(r, UNREADABLE_REASON, 1) for r in fresh if r.platform_run_id is None]
        self.stats.skipped_other_run += len(fresh) - len(work) - len(unreadable)
        positions = _positions(fresh)
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self._commit(work, positions, dead=unreadable)
                return
            except Exception as exc:
                self.stats.batch_failures += 1
                self.log.warning("batch of %d failed (attempt %d/%d): %r", len(work), attempt,
                                 self.max_attempts, exc)
                await anyio.sleep(0.05 * attempt)
        await self._isolate(fresh, work)

    async def _commit(self, records: Sequence[InboundRecord], positions: dict[CheckpointKey, tuple[str, int]],
                      dead: Sequence[tuple[InboundRecord, str, int]] = ()) -> None:
        batch = Batch(records, None, self.ctx.platform_run_id, self.component)
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            batch.conn = conn
            if records:
                await self.actor.handle(batch)
            dead = [*dead, *((r, reason, 1) for r, reason in batch.rejected)]
            if dead:
                await conn.executemany(
                    "INSERT INTO rt_dead_letters (actor, stream, shard_id, sequence_number, platform_run_id, "
                    "event_id, reason, attempts, data) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING",
                    [(self.component, r.stream, r.shard_id, r.sequence_number, r.platform_run_id, r.event_id,
                      reason, attempts, r.data) for r, reason, attempts in dead],
                )
            await write_outbox(conn, self.ctx.pack_id, batch.emitted)
            await save_checkpoints(conn, self.component, self.ctx.platform_run_id, positions)
        for key, (seq, _n) in positions.items():
            self.checkpoints[key] = seq
        self.stats.batches += 1
        self.stats.handled += len(records)
        self.stats.dead_lettered += len(dead)
        self.stats.emitted += len(batch.emitted)
        self.stats.last_commit_at = time.time()
        if batch.emitted and self.relay is not None:
            self.relay.wake()
        await self.actor.after_commit(batch)

    async def _isolate(self, fresh: Sequence[InboundRecord], work: Sequence[InboundRecord]) -> None:
        """Replay record by record, so one poison record cannot block the shard."""
        wanted = {id(r) for r in work}
        for record in fresh:
            position = {(record.stream, record.shard_id): (record.sequence_number, 1)}
            if id(record) not in wanted:
                dead = [(record, UNREADABLE_REASON, 1)] if record.platform_run_id is None else []
                await self._commit([], position, dead=dead)
                continue
            reason = ""
            for attempt in range(1, self.max_attempts + 1):
                try:
                    await self._commit([record], position)
                    reason = ""
                    break
                except Exception as exc:
                    if is_transient(exc) and attempt == self.max_attempts:
                        # A dependency is down, not this record: hand the batch back to the
                        # supervisor, which restarts with backoff and replays what is in hand.
                        raise
                    reason = f"{type(exc).__name__}: {exc}"[:2000]
                    self.log.debug("record %s failed attempt %d: %s", record.sequence_number, attempt,
                                   traceback.format_exc(limit=3))
            if reason:
                self.log.error("dead-lettering %s/%s seq=%s event_id=%s: %s", record.stream,
                               record.shard_id, record.sequence_number, record.event_id, reason)
                await self._commit([], position, dead=[(record, reason, self.max_attempts)])


def _positions(records: Sequence[InboundRecord]) -> dict[CheckpointKey, tuple[str, int]]:
    out: dict[CheckpointKey, tuple[str, int]] = {}
    for r in records:  # records arrive in shard order, so the last one per shard is the newest
        key = (r.stream, r.shard_id)
        prev = out.get(key)
        out[key] = (r.sequence_number, (prev[1] if prev else 0) + 1)
    return out
