"""One event-time clock over every output: a k-way merge of per-output, time-sorted batch sources.

The reference streamed each output on its own clock, so arrivals and flow anchors reached IG long
before (or after) the traffic that needs them (critique §13.1 #7). Here the order is (ts_utc, rank):
rank is the output's position in the facts view's `intended_outputs` (context first), so at equal
event time context precedes traffic, and within one output the view's own order is kept.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class BatchSource(Protocol[T_co]):
    """Yields the items of one output in time order, a batch at a time; an empty batch means the end."""

    async def next_batch(self) -> Sequence[T_co]: ...


class _Lane(Generic[T]):
    __slots__ = ("buffer", "done", "source")

    def __init__(self, source: BatchSource[T]) -> None:
        self.source = source
        self.buffer: deque[T] = deque()
        self.done = False

    async def fill(self) -> bool:
        """Ensure at least one buffered item; False when the source is exhausted."""
        while not self.buffer and not self.done:
            batch = await self.source.next_batch()
            if not batch:
                self.done = True
            self.buffer.extend(batch)
        return bool(self.buffer)


async def merge_by_event_time(
    sources: Sequence[BatchSource[T]],
    ts_of: Callable[[T], str],
    *,
    is_closed: Callable[[int], bool] = lambda _rank: False,
) -> AsyncIterator[tuple[int, T]]:
    """Yield `(rank, item)` in (ts_utc, rank) order across `sources`.

    `ts_of` must return the fixed-width `YYYY-MM-DDTHH:MM:SS.ffffffZ` string, whose byte order is time
    order. `is_closed(rank)` lets the consumer stop one output (its cap) without reading it further:
    it is checked before a lane is refilled and before its head is yielded.
    """
    lanes = [_Lane(s) for s in sources]
    heap: list[tuple[str, int]] = []
    for rank, lane in enumerate(lanes):
        if not is_closed(rank) and await lane.fill():
            heapq.heappush(heap, (ts_of(lane.buffer[0]), rank))
    while heap:
        _ts, rank = heapq.heappop(heap)
        if is_closed(rank):
            continue
        lane = lanes[rank]
        item = lane.buffer.popleft()
        yield rank, item
        if not is_closed(rank) and await lane.fill():
            heapq.heappush(heap, (ts_of(lane.buffer[0]), rank))
