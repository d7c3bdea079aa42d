"""Publish admitted envelopes through the runtime's one PutRecords sender (`PutRecordsSender`).

Per stream, records go out in order (the sender cuts requests by count and bytes, retries only the
entries Kinesis reports failed, and judges a failed call by `fraudrt.runtime.classify`); streams go
out concurrently, and with `lanes` > 1 a stream's records are split by partition key into that many
concurrent sends. A call whose outcome is unknown is retried whole, which can put a duplicate on the
bus, never a gap (consumers dedupe). Whatever is still unsent when the budget is spent, or refused
for good (a missing stream), is `DependencyDown("bus")`: the push is answered 503 and retried. No
single record is refused for its size or key: admission quarantines those (`EVENT_TOO_LARGE`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

import msgspec

from fraudrt.contracts import utc_now_ts
from fraudrt.runtime.bus import PutEntry, PutRecordsSender, PutResult, SenderStats, shard_number

from ._errors import DependencyDown, dependency_down
from ._records import EbRef


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


class Publisher:
    def __init__(self, bus: BusLike, *, budget_seconds: float = 10.0, lanes: int = 1,
                 min_lane_records: int = 100) -> None:
        self.budget = budget_seconds
        self.lanes = lanes
        self.min_lane_records = min_lane_records
        self.sender = PutRecordsSender(bus)

    @property
    def bus(self) -> BusLike:
        bus: BusLike = self.sender.bus  # type: ignore[assignment]
        return bus

    @bus.setter
    def bus(self, bus: BusLike) -> None:
        self.sender.bus = bus

    @property
    def stats(self) -> SenderStats:
        return self.sender.stats

    async def _put_lane(self, stream: str, items: list[PublishItem], deadline: float) -> list[EbRef]:
        outcomes = await self.sender.send(stream, [PutEntry(i.data, i.partition_key) for i in items],
                                          deadline=deadline)
        refs: list[EbRef] = []
        now = utc_now_ts()
        unsent = [o for o in outcomes if not o.ok]
        if unsent:
            first = unsent[0]
            if any(o.rejected for o in unsent):
                raise DependencyDown("bus", f"{stream}: refused: {first.error}")
            raise DependencyDown("bus", f"{stream}: {len(unsent)} record(s) unpublished within the budget "
                                        f"({first.error})")
        for o in outcomes:
            assert o.shard_id is not None and o.sequence_number is not None
            refs.append(EbRef(topic=stream, partition=shard_number(o.shard_id), offset=o.sequence_number,
                              offset_kind="kinesis_sequence", published_at_utc=now))
        return refs

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
