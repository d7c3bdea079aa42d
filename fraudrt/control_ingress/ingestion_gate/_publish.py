"""Publish admitted envelopes with batched PutRecords through the runtime's `KinesisBus`.

Per stream, records go out in order in chunks of 500; streams go out concurrently. Only the entries
Kinesis reports failed are retried (with backoff), inside a time budget; a call whose outcome is
unknown is retried whole, which can put a duplicate on the bus, never a gap (consumers dedupe).
Whether a failed call is worth retrying is `fraudrt.runtime.classify`'s verdict; a call the bus
refuses for good (a missing stream) is `DependencyDown("bus")` at once. No single record is
refused for its size or key: admission quarantines those (`EVENT_TOO_LARGE`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from fraudrt.contracts import utc_now_ts
from fraudrt.runtime import PutEntry, PutResult, classify, shard_number

from ._errors import DependencyDown, dependency_down
from ._records import EbRef

MAX_PUT_RECORDS = 500  # the PutRecords limit (KinesisBus refuses more)


def _lane(partition_key: str, lanes: int) -> int:
    # IG's keys are sha256 hex; anything else still maps deterministically within this process.
    try:
        return int(partition_key[:8], 16) % lanes
    except ValueError:
        return hash(partition_key) % lanes


class BusLike(Protocol):
    async def put_records(self, stream: str, entries: Sequence[PutEntry]) -> list[PutResult]: ...


class PublishItem(msgspec.Struct, frozen=True):
    stream: str
    partition_key: str
    data: bytes


@dataclass(slots=True)
class PublishStats:
    records_total: int = 0
    calls_total: int = 0
    retries_total: int = 0  # entries re-sent after a per-record failure or an unknown-outcome call
    failed_calls_total: int = 0
    consecutive_failures: int = 0


class Publisher:
    def __init__(self, bus: BusLike, *, budget_seconds: float = 10.0, lanes: int = 1,
                 min_lane_records: int = 100) -> None:
        self.bus = bus
        self.budget = budget_seconds
        self.lanes = lanes
        self.min_lane_records = min_lane_records
        self.stats = PublishStats()

    async def _put_chunk(self, stream: str, items: Sequence[PublishItem], deadline: float) -> list[EbRef]:
        refs: list[EbRef | None] = [None] * len(items)
        pending = list(range(len(items)))
        attempt = 0
        while pending:
            try:
                results = await self.bus.put_records(
                    stream, [PutEntry(items[i].data, items[i].partition_key) for i in pending])
                self.stats.calls_total += 1
            except Exception as exc:
                self.stats.failed_calls_total += 1
                self.stats.consecutive_failures += 1
                failure = classify(exc)
                if not failure.transient:
                    raise DependencyDown("bus", f"{stream}: {failure.code}: {exc}") from exc
                results = []
                failed = pending
                last = f"{failure.code}: {exc}"
            else:
                self.stats.consecutive_failures = 0
                failed = []
                now = utc_now_ts()
                last = ""
                for i, res in zip(pending, results, strict=True):
                    if res.ok:
                        assert res.shard_id is not None and res.sequence_number is not None
                        refs[i] = EbRef(topic=stream, partition=shard_number(res.shard_id),
                                        offset=res.sequence_number, offset_kind="kinesis_sequence",
                                        published_at_utc=now)
                    else:
                        failed.append(i)
                        last = f"{res.error_code}: {res.error_message}"
            if not failed:
                break
            self.stats.retries_total += len(failed)
            attempt += 1
            delay = min(2.0, 0.05 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.0)
            if time.monotonic() + delay > deadline:
                raise DependencyDown("bus", f"{stream}: {len(failed)} record(s) unpublished after "
                                            f"{attempt} attempt(s) ({last})")
            await asyncio.sleep(delay)
            pending = failed
        self.stats.records_total += len(items)
        return [r for r in refs if r is not None]

    async def _put_lane(self, stream: str, items: list[PublishItem], deadline: float) -> list[EbRef]:
        out: list[EbRef] = []
        for start in range(0, len(items), MAX_PUT_RECORDS):
            out.extend(await self._put_chunk(stream, items[start:start + MAX_PUT_RECORDS], deadline))
        return out

    async def _put_stream(self, stream: str, items: list[PublishItem], deadline: float) -> list[EbRef]:
        # Up to `lanes` PutRecords calls in flight per stream (`ig.publish_lanes`: 1 on the embedded
        # substrate, whose kinesalite is one thread; more for real multi-shard streams). Lanes split
        # by partition key, so records of one key keep their order.
        lanes = min(self.lanes, max(1, len(items) // self.min_lane_records))
        if lanes <= 1:
            return await self._put_lane(stream, items, deadline)
        groups: list[list[int]] = [[] for _ in range(lanes)]
        for i, item in enumerate(items):
            groups[_lane(item.partition_key, lanes)].append(i)
        results = await asyncio.gather(*(self._put_lane(stream, [items[i] for i in g], deadline) for g in groups))
        out: list[EbRef | None] = [None] * len(items)
        for g, refs in zip(groups, results, strict=True):
            for i, ref in zip(g, refs, strict=True):
                out[i] = ref
        return [r for r in out if r is not None]

    async def publish(self, items: Sequence[PublishItem]) -> list[EbRef]:
        """EbRefs in the order of `items`; raises `DependencyDown("bus")` once the budget is spent."""
        if not items:
            return []
        deadline = time.monotonic() + self.budget
        by_stream: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_stream.setdefault(item.stream, []).append(i)
        streams = list(by_stream)
        results = await asyncio.gather(
            *(self._put_stream(s, [items[i] for i in by_stream[s]], deadline) for s in streams),
            return_exceptions=True)
        out: list[EbRef | None] = [None] * len(items)
        for stream, res in zip(streams, results, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, DependencyDown):
                    raise res
                down = dependency_down("bus", res)
                if down is None:
                    raise res
                raise down from res
            for i, ref in zip(by_stream[stream], res, strict=True):
                out[i] = ref
        return [r for r in out if r is not None]
