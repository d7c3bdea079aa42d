"""What a component implements to run in a pack: `Actor` (a bus consumer) or `Service` (anything else).

An actor never talks to Kinesis itself: the pack's shared shard readers deliver batches, and whatever
the handler emits is written to the outbox in the same transaction as its state and checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import anyio

from fraudrt.config import Settings

from ._fence import Notifications, ProgressFence
from ._inbox import content_hash, take_in
from ._latency import LatencyHistogram
from ._outbox import write_outbox
from ._records import Emit, InboundRecord
from ._timers import Timer, epoch


class Batch:
    """What a handler gets: the records of its run and the open transaction to write state with."""

    def __init__(self, records: Sequence[InboundRecord], conn: Any, platform_run_id: str,
                 component: str = "") -> None:
        self.records = records
        self.conn = conn
        self.platform_run_id = platform_run_id
        self.component = component
        self.emitted: list[Emit] = []
        self.rejected: list[tuple[InboundRecord, str]] = []
        self.duplicates = 0
        self.mismatches = 0
        # Timers due now (only in `Actor.on_timer`), and the ones this batch sets or cancels.
        self.timers: Sequence[Timer] = ()
        self.timers_set: list[Timer] = []
        self.timers_cancelled: list[str] = []
        # Handler's scratch space, read back in `after_commit` once the batch is durable.
        self.notes: dict[str, Any] = {}

    def emit(self, stream: str, data: bytes, *, partition_key: str, event_id: str) -> None:
        self.emitted.append(Emit(stream, partition_key, event_id, data))

    def dead_letter(self, record: InboundRecord, reason: str) -> None:
        """Record that cannot ever be handled (bad input): dead-lettered with `reason` in this transaction."""
        self.rejected.append((record, reason))

    def set_timer(self, key: str, due_at: datetime | float, payload: bytes = b"") -> None:
        """Fire `Actor.on_timer` with this timer at or after `due_at` (epoch seconds or an aware
        datetime); written with this batch's state, so it exists iff the batch commits. Setting a
        key again replaces its due time and payload."""
        self.timers_set.append(Timer(key, epoch(due_at), payload))

    def cancel_timer(self, key: str) -> None:
        self.timers_cancelled.append(key)
        self.timers_set = [t for t in self.timers_set if t.key != key]

    async def take_in(self, records: Sequence[InboundRecord] | None = None,
                      hash_of: Callable[[InboundRecord], str] = content_hash) -> list[InboundRecord]:
        """The records (default: all of the batch) not taken in before by this component for this run.

        Duplicates are dropped and counted; a changed copy of a known event id is recorded as a
        mismatch (`rt_inbox_mismatches`) and dropped. Runs in this batch's transaction.
        """
        intake = await take_in(self.conn, self.component, self.platform_run_id,
                               self.records if records is None else records, hash_of)
        self.duplicates += intake.duplicates
        self.mismatches += len(intake.mismatches)
        return intake.new


@dataclass
class ComponentContext:
    """Shared by every component of one pack process."""

    settings: Settings
    platform_run_id: str
    pack_id: str
    pool: Any
    # The manifest's name for this component: checkpoints, inbox rows and artifact paths use it, so
    # two manifest entries of one class keep separate state. Empty: the class's `name`.
    component: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("fraudrt"))
    stopping: anyio.Event = field(default_factory=anyio.Event)
    # One LISTEN connection per pack process, shared by every component's fences and waits.
    notifications: Notifications | None = None

    def fence(self) -> ProgressFence:
        """Waits on other components' checkpoints (and their own notify channels) for this run."""
        if self.notifications is None:
            if not self.settings.postgres.dsn:
                raise RuntimeError("a progress fence needs a Postgres DSN")
            self.notifications = Notifications(self.settings.postgres.dsn)
        return ProgressFence(self.pool, self.notifications, self.platform_run_id)

    async def write_outbox(self, conn: Any, emits: Sequence[Emit]) -> None:
        """Emit from a transaction of the component's own, outside a batch (an HTTP handler, a
        background task): the envelopes are outbox rows of this pack, committed or rolled back with
        `conn`'s transaction, and published by the pack's relay like a batch's."""
        await write_outbox(conn, self.pack_id, emits)


class Component(ABC):
    """Common surface: a full component name (artifact paths use it) and its health."""

    name: ClassVar[str]
    # Packages whose `sql/` folder holds this component's tables.
    sql_packages: ClassVar[tuple[str, ...]] = ()

    def health(self) -> tuple[str, list[str]]:
        """(GREEN|AMBER|RED, reasons) from the component's own point of view."""
        return "GREEN", []

    def metrics(self) -> dict[str, Any]:
        return {}

    def health_details(self) -> dict[str, Any]:
        return {}

    def latency_histograms(self) -> Mapping[str, LatencyHistogram]:
        """Histograms of the hops this component owns (e.g. `decision_to_outcome`), exported by the
        pack as the gauges `latency_ms.<name>.{count,p50,p95,p99,max,mean}` beside the runtime's own
        `arrival_to_commit`, and by `/metrics` as `fraudrt_latency_seconds{hop=<name>}`."""
        return {}


class Actor(Component):
    """A bus consumer: subscribe to streams, handle batches transactionally."""

    # Records per handler call at most (several deliveries are coalesced up to this).
    max_batch: ClassVar[int] = 2000

    @abstractmethod
    def subscriptions(self, settings: Settings) -> list[str]:
        """Physical stream names to read."""

    async def start(self, ctx: ComponentContext) -> None:
        """Open clients, warm caches. Called once per (re)start, before the first batch."""

    async def stop(self) -> None:
        """Close what `start` opened."""

    @abstractmethod
    async def handle(self, batch: Batch) -> None:
        """Apply `batch.records` (all of this run, in shard order) using `batch.conn`.

        Raise to have the batch retried; a record that keeps failing is dead-lettered. Keep effects
        inside the transaction (or idempotent), because a failed batch is rolled back and re-run.
        """

    async def after_commit(self, batch: Batch) -> None:
        """In-memory bookkeeping once the batch is durable (counters, caches). Never re-run: an
        exception here is logged, it does not undo or repeat the commit."""

    async def on_timer(self, batch: Batch) -> None:
        """Timers set with `batch.set_timer` that are due, in `batch.timers` (oldest first), with
        an open transaction like `handle`'s: change state, emit, set new timers. Raise to retry."""
        raise NotImplementedError(f"{type(self).__name__} set a timer but does not implement on_timer")

    has_background: ClassVar[bool] = False

    async def background(self, ctx: ComponentContext) -> None:
        """Long work an actor's handler only records (e.g. WSP streams a world after READY is committed).

        Set `has_background = True` to have the pack supervise it beside the handler; return once
        `ctx.stopping` is set. It uses `ctx.pool` and its own checkpoints, never the batch transaction.
        """


class Service(Component):
    """A non-consumer component (HTTP service, timer-driven reporter, ...)."""

    # Set by a service once its startup is over (clients built, port bound). The pack waits for
    # every service's event before it freezes its startup heap (`_gc.freeze_heap`).
    ready: asyncio.Event | None = None

    @abstractmethod
    async def run(self, ctx: ComponentContext) -> None:
        """Run until `ctx.stopping` is set, then return after draining."""
