"""One reader per (stream, shard) per pack process, fanning each fetched batch out to its subscribers.

It keeps its shard iterator between calls (re-created only on expiry or error), starts
AFTER_SEQUENCE_NUMBER of the lowest subscriber checkpoint or TRIM_HORIZON when any subscriber has
none, and is paced by the slowest subscriber's bounded queue.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from ._bus import BusRecord, KinesisBus, seq_key
from ._errors import BusError, ExpiredIteratorError
from ._records import InboundRecord

log = logging.getLogger("fraudrt.runtime.reader")

# A shard whose every read has failed this long turns its subscribers RED.
READ_FAILING_RED_SECONDS = 30.0


class _PayloadPins(msgspec.Struct):
    platform_run_id: str | None = None


class _Pins(msgspec.Struct):
    # Only what run-scoping needs; the handler decodes the full record itself. Canonical envelopes
    # carry the pins at the top level; control-bus messages (READY) carry them in their payload.
    platform_run_id: str | None = None
    event_id: str | None = None
    message_id: str | None = None
    # Any: a record whose ts_utc is not a string is still scoped by its run (just not a watermark).
    ts_utc: Any = None
    payload: _PayloadPins | None = None


_peek = msgspec.json.Decoder(_Pins)


def to_inbound(record: BusRecord) -> InboundRecord:
    try:
        pins = _peek.decode(record.data)
        run_id = pins.platform_run_id or (pins.payload.platform_run_id if pins.payload else None)
        event_id = pins.event_id or pins.message_id
        ts = pins.ts_utc
        # Only a canonical timestamp is a watermark: then text order is time order.
        event_ts = ts if isinstance(ts, str) and len(ts) == 27 and ts[-1] == "Z" else None
    except (msgspec.DecodeError, msgspec.ValidationError):
        # Unreadable: delivered with no run id, so the runner dead-letters it with a reason.
        run_id = event_id = event_ts = None
    return InboundRecord(record.stream, record.shard_id, record.sequence_number, record.partition_key,
                         record.data, record.arrival_ts, run_id, event_id, event_ts)


@dataclass(frozen=True)
class Delivery:
    stream: str
    shard_id: str
    records: list[InboundRecord]
    millis_behind: int


@dataclass
class ReaderStats:
    calls: int = 0
    records: int = 0
    empty_reads: int = 0
    errors: int = 0
    iterator_renewals: int = 0
    millis_behind: int = 0
    last_sequence: str | None = None


@dataclass
class ShardReader:
    bus: KinesisBus
    stream: str
    shard_id: str
    subscribers: list[MemoryObjectSendStream[Delivery]]
    start_after: str | None
    limit: int = 5000
    # A shard at its tip is polled again after idle_sleep_min for as long as it carried data within
    # the last `hot_seconds`, then the wait doubles up to idle_sleep_max: under traffic, even bursty
    # (a relay publishes a commit's worth at a time), a hop waits at most the minimum (the latency
    # goal is 100 ms admission -> audit across ~4 hops); an idle pack costs the bus a few calls a
    # second per shard.
    idle_sleep_min: float = 0.01
    idle_sleep_max: float = 0.2
    hot_seconds: float = 2.0
    stats: ReaderStats = field(default_factory=ReaderStats)
    # The shard is closed (split or merged) and every record of it has been delivered.
    finished: bool = False
    # Since when every read has failed (monotonic), and why: a bus outage shows in health.
    failing_since: float | None = None
    last_error: str | None = None

    def health(self) -> tuple[str, list[str]]:
        if self.failing_since is None:
            return "GREEN", []
        down = time.monotonic() - self.failing_since
        state = "RED" if down >= READ_FAILING_RED_SECONDS else "AMBER"
        return state, [f"BUS_READ_FAILING: {self.last_error} for {down:.0f}s"]

    async def _iterator(self, after: str | None) -> str:
        return await self.bus.get_shard_iterator(self.stream, self.shard_id, after_sequence=after)

    async def run(self, stopping: anyio.Event) -> None:
        # A supervisor restart resumes after what this reader already delivered, not from the start.
        last = self.stats.last_sequence or self.start_after
        iterator: str | None = None
        idle = self.idle_sleep_min
        last_data = time.monotonic()
        failures = 0
        while not stopping.is_set():
            try:
                if iterator is None:
                    iterator = await self._iterator(last)
                result = await self.bus.get_records(self.stream, self.shard_id, iterator, self.limit)
            except ExpiredIteratorError:
                self.stats.iterator_renewals += 1
                iterator = None
                continue
            except BusError as exc:
                self.stats.errors += 1
                failures += 1
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.last_error = f"{exc.code}: {exc}"[:300]
                if not exc.retriable:
                    raise
                delay = min(10.0, max(exc.backoff, 0.1) * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0)
                log.warning("read %s/%s failed (%s); retry in %.2fs", self.stream, self.shard_id, exc, delay)
                # A failed call may have consumed the iterator; restart after what we delivered.
                iterator = None
                await anyio.sleep(delay)
                continue
            failures = 0
            self.failing_since = None
            self.stats.calls += 1
            self.stats.millis_behind = result.millis_behind
            iterator = result.next_iterator
            if result.records:
                inbound = [to_inbound(r) for r in result.records]
                last = inbound[-1].sequence_number
                self.stats.records += len(inbound)
                delivery = Delivery(self.stream, self.shard_id, inbound, result.millis_behind)
                for queue in self.subscribers:
                    await queue.send(delivery)
                # Only once every subscriber has it: a restart resumes after this point.
                self.stats.last_sequence = last
                idle = self.idle_sleep_min
                last_data = time.monotonic()
            else:
                self.stats.empty_reads += 1
                if iterator is None:
                    log.info("shard %s/%s closed and read to its end", self.stream, self.shard_id)
                    self.finished = True
                    return
                # Caught up: back off so an idle pack costs kinesalite little.
                if result.millis_behind == 0:
                    await anyio.sleep(idle)
                    if time.monotonic() - last_data >= self.hot_seconds:
                        idle = min(self.idle_sleep_max, idle * 2)


def lowest_checkpoint(checkpoints: list[str | None]) -> str | None:
    """Start position shared by subscribers: None (TRIM_HORIZON) if any has no checkpoint."""
    if not checkpoints or any(c is None for c in checkpoints):
        return None
    return min((c for c in checkpoints if c is not None), key=seq_key)
