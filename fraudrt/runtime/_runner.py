"""Drive one actor: coalesce deliveries, gate by run, commit state + outbox + timers + checkpoint together.

Failures are judged by the one classification (`classify`):

- A dependency failing (Postgres restarting, S3 unreachable, throttling) is not the records' fault:
  the runner keeps the batch in hand, waits with backoff (its health says DEPENDENCY_DOWN) and tries
  again, for as long as it takes. It never dead-letters for it.
- Anything else is retried `max_attempts` times; then the batch is replayed one record at a time and
  a record that still fails goes to `rt_dead_letters` with its reason, in the transaction that moves
  the checkpoint past it. A checkpoint never passes a record that was neither handled nor
  dead-lettered.

Before every retry the runner re-reads its checkpoints from Postgres and drops what they cover: a
connection lost at COMMIT may have committed anyway, and the retry must not apply those records
again. `after_commit` runs once, after the commit, outside any retry.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ._actor import Actor, Batch, ComponentContext
from ._checkpoint import CheckpointKey, is_after, load_checkpoints, load_watermarks, save_checkpoints
from ._classify import Failure, classify
from ._latency import LatencyHistogram
from ._outbox import OutboxRelay, write_outbox
from ._reader import Delivery
from ._records import InboundRecord
from ._timers import Timer, next_due, save_timers, take_due

UNREADABLE_REASON = "UNREADABLE_RECORD: not a JSON object carrying platform_run_id (top level or payload)"

# Health turns RED once a dependency has failed every attempt for this long.
DEPENDENCY_RED_AFTER_SECONDS = 30.0
_DEPENDENCY_MAX_BACKOFF = 10.0
_TIMERS_PER_BATCH = 500
_IDLE_WAIT = 0.5


class _Abandoned(Exception):
    """The pack is draining while a dependency is down: leave the batch uncommitted (re-read later)."""


@dataclass
class ActorStats:
    seen: int = 0
    handled: int = 0
    skipped_other_run: int = 0
    skipped_already_committed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    mismatches: int = 0
    batches: int = 0
    batch_failures: int = 0
    dependency_failures: int = 0
    emitted: int = 0
    timers_fired: int = 0
    after_commit_errors: int = 0
    last_commit_at: float = 0.0
    lag_ms: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, str] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seen_total": self.seen, "handled_total": self.handled,
            "skipped_other_run_total": self.skipped_other_run,
            "skipped_already_committed_total": self.skipped_already_committed,
            "dead_lettered_total": self.dead_lettered, "duplicates_total": self.duplicates,
            "payload_mismatches_total": self.mismatches, "batches_total": self.batches,
            "batch_failures_total": self.batch_failures, "dependency_failures_total": self.dependency_failures,
            "emitted_total": self.emitted, "timers_fired_total": self.timers_fired,
            "after_commit_errors_total": self.after_commit_errors,
            "lag_ms": dict(self.lag_ms),
        }


@dataclass
class _Work:
    """One commit: the run's records to handle, where the checkpoints go, what is dead-lettered."""

    records: list[InboundRecord]
    positions: dict[CheckpointKey, tuple[str, int]]
    dead: list[tuple[InboundRecord, str, int]]
    seen: int = 0
    other_run: int = 0
    already_committed: int = 0


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
        self.watermarks: dict[CheckpointKey, str] = {}
        self._in_hand: list[Delivery] | None = None
        # The manifest's name: two entries of one class keep separate checkpoints and inbox rows.
        self.component = ctx.component or actor.name
        self.log = logging.getLogger(f"fraudrt.{self.component}")
        self._next_due: float | None = None
        self.dependency_down_since: float | None = None
        self.last_dependency_failure: str | None = None

    # ------------------------------------------------------------------ state

    async def load(self) -> dict[CheckpointKey, str]:
        """Read the checkpoints, watermarks and the next timer; a database that is down is waited for."""
        while True:
            try:
                return await self._load()
            except Exception as exc:
                failure = classify(exc)
                if not failure.transient:
                    raise
                await self._dependency_wait(failure, exc)

    async def _start(self) -> None:
        """Start the actor; a dependency down while it loads its state is waited out as one down
        mid-run is (health says DEPENDENCY_DOWN), not a crash. A failed start is stopped before the
        next try, so what it had opened is closed."""
        while True:
            try:
                await self.actor.start(self.ctx)
                self._recovered()
                return
            except Exception as exc:
                failure = classify(exc)
                if not failure.transient:
                    raise  # run() stops it on the way out
                with anyio.CancelScope(shield=True):
                    await self.actor.stop()
                await self._dependency_wait(failure, exc)

    async def _load(self) -> dict[CheckpointKey, str]:
        async with self.ctx.pool.acquire() as conn:
            self.checkpoints = await load_checkpoints(conn, self.component, self.ctx.platform_run_id)
            self.watermarks = await load_watermarks(conn, self.component, self.ctx.platform_run_id)
            self._next_due = await next_due(conn, self.component, self.ctx.platform_run_id)
        for (stream, shard), ts in self.watermarks.items():
            self.stats.watermarks[f"{stream}/{shard}"] = ts
        return self.checkpoints

    def health(self) -> tuple[str, list[str]]:
        if self.dependency_down_since is None:
            return "GREEN", []
        down = time.monotonic() - self.dependency_down_since
        state = "RED" if down >= DEPENDENCY_RED_AFTER_SECONDS else "AMBER"
        return state, [f"DEPENDENCY_DOWN: {self.last_dependency_failure} for {down:.0f}s"]

    # ------------------------------------------------------------------ the loop

    async def _next_batch(self, wait: float) -> list[Delivery] | None:
        """Wait up to `wait` s for one delivery, then take whatever else is queued, up to the batch size."""
        with anyio.move_on_after(wait):
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

    def _timers_due(self) -> bool:
        return self._next_due is not None and self._next_due <= time.time()

    def _wait_budget(self) -> float:
        if self._next_due is None:
            return _IDLE_WAIT
        return max(0.0, min(_IDLE_WAIT, self._next_due - time.time()))

    async def run(self) -> None:
        try:
            await self.load()
            await self._start()
            while not self.ctx.stopping.is_set():
                if self._timers_due() and not self._in_hand:
                    with anyio.CancelScope(shield=True):
                        await self._fire_timers()
                    continue
                # Deliveries taken off the queue stay in hand until committed: if this run crashes,
                # the restarted run processes them again (already-committed records are dropped by
                # checkpoint), because the shared reader has moved on and will not re-send them.
                deliveries = self._in_hand or await self._next_batch(self._wait_budget())
                if deliveries:
                    self._in_hand = deliveries
                    # Shielded: a drain request never interrupts a commit half way.
                    with anyio.CancelScope(shield=True):
                        await self._process(deliveries)
                    self._in_hand = None
                self._update_lag()
        except _Abandoned:
            self.log.warning("draining while a dependency is down; %d delivery(ies) left uncommitted "
                             "(read again after restart)", len(self._in_hand or ()))
        finally:
            with anyio.CancelScope(shield=True):
                await self.actor.stop()

    def _update_lag(self) -> None:
        # Consumer lag: how long the oldest record waiting for this actor has been on the bus.
        queued = self.inbox.statistics().current_buffer_used
        if not queued and not self._in_hand:
            for stream in self.stats.lag_ms:
                self.stats.lag_ms[stream] = 0

    # ------------------------------------------------------------------ records

    def _select(self, deliveries: Sequence[Delivery]) -> _Work:
        """What is left to do of `deliveries` given the current checkpoints."""
        fresh: list[InboundRecord] = []
        # Advanced as records are accepted, so a reader restart that re-delivers a range already
        # queued cannot put the same record into one batch twice.
        high: dict[CheckpointKey, str | None] = {}
        already = 0
        now = time.time()
        for d in deliveries:
            key = (d.stream, d.shard_id)
            cp = high.get(key, self.checkpoints.get(key))
            for r in d.records:
                if is_after(r.sequence_number, cp):
                    fresh.append(r)
                    cp = r.sequence_number
                else:
                    already += 1
            high[key] = cp
            if d.records:
                self.stats.lag_ms[d.stream] = max(0, int((now - d.records[0].arrival_ts) * 1000))
        run = self.ctx.platform_run_id
        work = [r for r in fresh if r.platform_run_id == run]
        # A record whose run cannot be read cannot be scoped: dead-letter it, never skip it silently.
        unreadable = [(r, UNREADABLE_REASON, 1) for r in fresh if r.platform_run_id is None]
        return _Work(work, _positions(fresh), unreadable, seen=len(fresh),
                     other_run=len(fresh) - len(work) - len(unreadable), already_committed=already)

    async def _reload(self) -> None:
        """Re-read the checkpoints: a failed COMMIT may have committed (lost acknowledgement)."""
        async with self.ctx.pool.acquire() as conn:
            self.checkpoints = await load_checkpoints(conn, self.component, self.ctx.platform_run_id)

    async def _process(self, deliveries: Sequence[Delivery]) -> None:
        work = self._select(deliveries)
        self.stats.skipped_already_committed += work.already_committed
        if not work.positions:
            return
        attempts = 0
        while True:
            try:
                batch = await self._commit(work.records, work.positions, dead=work.dead)
            except Exception as exc:
                failure = classify(exc)
                if failure.transient:
                    await self._dependency_wait(failure, exc)
                else:
                    attempts += 1
                    self.stats.batch_failures += 1
                    self.log.warning("batch of %d failed (attempt %d/%d, %s): %r", len(work.records), attempts,
                                     self.max_attempts, failure.code, exc)
                await self._reload_after_failure()
                work = self._select(deliveries)
                if not work.positions:
                    # The failed commit had committed after all (its acknowledgement was lost).
                    self._recovered()
                    return
                if attempts >= self.max_attempts:
                    await self._isolate(work)
                    return
                if not failure.transient:
                    await anyio.sleep(0.05 * attempts)
                continue
            self._committed(work, batch)
            await self._after_commit(batch)
            return

    async def _reload_after_failure(self) -> None:
        while True:
            try:
                await self._reload()
                return
            except Exception as exc:
                failure = classify(exc)
                if not failure.transient:
                    raise
                await self._dependency_wait(failure, exc)

    async def _dependency_wait(self, failure: Failure, exc: BaseException) -> None:
        """Back off while a dependency is down; give up (uncommitted) only if the pack is draining."""
        self.stats.dependency_failures += 1
        now = time.monotonic()
        if self.dependency_down_since is None:
            self.dependency_down_since = now
            self.log.warning("dependency failure (%s), retrying until it recovers: %r", failure.code, exc)
        self.last_dependency_failure = failure.code
        down = now - self.dependency_down_since
        delay = min(_DEPENDENCY_MAX_BACKOFF, max(failure.backoff, 0.1) * 2 ** min(6, int(down // 2) + 1))
        with anyio.move_on_after(delay * random.uniform(0.5, 1.0)):
            await self.ctx.stopping.wait()
        if self.ctx.stopping.is_set():
            raise _Abandoned()

    def _recovered(self) -> None:
        if self.dependency_down_since is not None:
            self.log.info("dependency recovered after %.1fs (%s)", time.monotonic() - self.dependency_down_since,
                          self.last_dependency_failure)
            self.dependency_down_since = None

    async def _commit(self, records: Sequence[InboundRecord], positions: dict[CheckpointKey, tuple[str, int]],
                      dead: Sequence[tuple[InboundRecord, str, int]] = (), timers: Sequence[Timer] = (),
                      fire: bool = False) -> Batch:
        batch = Batch(records, None, self.ctx.platform_run_id, self.component)
        async with self.ctx.pool.acquire() as conn, conn.transaction():
            batch.conn = conn
            if fire:
                batch.timers = await take_due(conn, self.component, self.ctx.platform_run_id, _TIMERS_PER_BATCH)
                if batch.timers:
                    await self.actor.on_timer(batch)
            elif records:
                await self.actor.handle(batch)
            all_dead = [*dead, *((r, reason, 1) for r, reason in batch.rejected)]
            if all_dead:
                await conn.executemany(
                    "INSERT INTO rt_dead_letters (actor, stream, shard_id, sequence_number, platform_run_id, "
                    "event_id, reason, attempts, data) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT DO NOTHING",
                    [(self.component, r.stream, r.shard_id, r.sequence_number, r.platform_run_id, r.event_id,
                      reason, attempts, r.data) for r, reason, attempts in all_dead],
                )
            await write_outbox(conn, self.ctx.pack_id, batch.emitted)
            await save_timers(conn, self.component, self.ctx.platform_run_id, batch.timers_set,
                              batch.timers_cancelled)
            if positions:
                await save_checkpoints(conn, self.component, self.ctx.platform_run_id, positions,
                                       _watermarks(records, self.watermarks))
        batch.notes.setdefault("_dead", len(all_dead))
        return batch

    def _committed(self, work: _Work, batch: Batch) -> None:
        """Bookkeeping once a batch of records is durable (never re-run)."""
        self._recovered()
        now = time.time()
        for key, (seq, _n) in work.positions.items():
            self.checkpoints[key] = seq
        for key, ts in _watermarks(work.records, self.watermarks).items():
            self.watermarks[key] = ts
            self.stats.watermarks[f"{key[0]}/{key[1]}"] = ts
        for r in work.records:
            if r.arrival_ts:
                self.stats.latency.observe(max(0.0, (now - r.arrival_ts) * 1000.0))
        self.stats.seen += work.seen
        self.stats.skipped_other_run += work.other_run
        self.stats.batches += 1
        self.stats.handled += len(work.records) - len(batch.rejected)
        self.stats.dead_lettered += int(batch.notes.get("_dead", 0))
        self.stats.duplicates += batch.duplicates
        self.stats.mismatches += batch.mismatches
        self._after_emit(batch)

    def _after_emit(self, batch: Batch) -> None:
        self.stats.emitted += len(batch.emitted)
        self.stats.last_commit_at = time.time()
        if batch.timers_set:
            soonest = min(t.due_at for t in batch.timers_set)
            self._next_due = soonest if self._next_due is None else min(self._next_due, soonest)
        if batch.emitted and self.relay is not None:
            self.relay.wake()

    async def _after_commit(self, batch: Batch) -> None:
        try:
            await self.actor.after_commit(batch)
        except Exception:
            # The batch is durable; repeating it would apply it twice. A bookkeeping bug is logged.
            self.stats.after_commit_errors += 1
            self.log.exception("after_commit failed (the batch is committed and is not repeated)")

    async def _isolate(self, work: _Work) -> None:
        """Replay record by record, so one poison record cannot block the shard."""
        wanted = {id(r) for r in work.records}
        dead_ids = {id(r) for r, _, _ in work.dead}
        ordered = sorted([*work.records, *(r for r, _, _ in work.dead)],
                         key=lambda r: (r.stream, r.shard_id, int(r.sequence_number)))
        # Records of other runs between them only need the checkpoint moved past them: the last
        # position per shard covers them once every record before it is done.
        for record in ordered:
            position = {(record.stream, record.shard_id): (record.sequence_number, 1)}
            if id(record) in dead_ids or id(record) not in wanted:
                await self._commit_retrying([], position, dead=[(record, UNREADABLE_REASON, 1)])
                continue
            reason = ""
            attempts = 0
            while attempts < self.max_attempts:
                try:
                    batch = await self._commit([record], position)
                except Exception as exc:
                    failure = classify(exc)
                    if failure.transient:
                        # A dependency is down, not this record: wait, never blame the record.
                        await self._dependency_wait(failure, exc)
                        await self._reload_after_failure()
                        if not is_after(record.sequence_number, self.checkpoints.get((record.stream,
                                                                                      record.shard_id))):
                            break
                        continue
                    attempts += 1
                    reason = f"{type(exc).__name__}: {exc}"[:2000]
                    self.log.debug("record %s failed attempt %d: %s", record.sequence_number, attempts,
                                   traceback.format_exc(limit=3))
                    continue
                reason = ""
                self._committed(_Work([record], position, []), batch)
                await self._after_commit(batch)
                break
            if reason:
                self.log.error("dead-lettering %s/%s seq=%s event_id=%s: %s", record.stream, record.shard_id,
                               record.sequence_number, record.event_id, reason)
                await self._commit_retrying([], position, dead=[(record, reason, self.max_attempts)])
        # Move past what is left (other runs' records after the last handled one).
        await self._commit_retrying([], work.positions)
        self.stats.seen += work.seen
        self.stats.skipped_other_run += work.other_run

    async def _commit_retrying(self, records: list[InboundRecord], positions: dict[CheckpointKey, tuple[str, int]],
                               dead: Sequence[tuple[InboundRecord, str, int]] = ()) -> None:
        """A commit with no handler call (dead letters, checkpoint moves): only dependencies can fail it."""
        while True:
            try:
                batch = await self._commit(records, positions, dead=dead)
            except Exception as exc:
                failure = classify(exc)
                if not failure.transient:
                    raise
                await self._dependency_wait(failure, exc)
                continue
            self._recovered()
            for key, (seq, _n) in positions.items():
                if is_after(seq, self.checkpoints.get(key)):
                    self.checkpoints[key] = seq
            self.stats.dead_lettered += int(batch.notes.get("_dead", 0))
            return

    # ------------------------------------------------------------------ timers

    async def _fire_timers(self) -> None:
        """Fire what is due, in batches, each in its own transaction."""
        attempts = 0
        while True:
            try:
                batch = await self._commit([], {}, fire=True)
            except Exception as exc:
                failure = classify(exc)
                if failure.transient:
                    await self._dependency_wait(failure, exc)
                    continue
                attempts += 1
                self.stats.batch_failures += 1
                self.log.exception("on_timer failed (attempt %d/%d)", attempts, self.max_attempts)
                if attempts >= self.max_attempts:
                    # Leave the timers in place; try again after a pause rather than spin.
                    self._next_due = time.time() + 5.0
                    return
                await anyio.sleep(0.05 * attempts)
                continue
            self._recovered()
            self.stats.timers_fired += len(batch.timers)
            self._after_emit(batch)
            await self._after_commit(batch)
            if len(batch.timers) < _TIMERS_PER_BATCH:
                break
        try:
            async with self.ctx.pool.acquire() as conn:
                self._next_due = await next_due(conn, self.component, self.ctx.platform_run_id)
        except Exception as exc:
            if not classify(exc).transient:
                raise
            self._next_due = time.time() + 1.0  # look again shortly


def _positions(records: Sequence[InboundRecord]) -> dict[CheckpointKey, tuple[str, int]]:
    out: dict[CheckpointKey, tuple[str, int]] = {}
    for r in records:  # records arrive in shard order, so the last one per shard is the newest
        key = (r.stream, r.shard_id)
        prev = out.get(key)
        out[key] = (r.sequence_number, (prev[1] if prev else 0) + 1)
    return out


def _watermarks(records: Sequence[InboundRecord], current: dict[CheckpointKey, str]) -> dict[CheckpointKey, str]:
    """The latest event time per shard among `records` and what is already known."""
    out: dict[CheckpointKey, str] = {}
    for r in records:
        if r.event_ts is None:
            continue
        key = (r.stream, r.shard_id)
        best = out.get(key) or current.get(key)
        if best is None or r.event_ts > best:
            out[key] = r.event_ts
    return out
