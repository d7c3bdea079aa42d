"""What the decision lane's consumers of `fp.bus.rtdl.v1` share: how records are read (wanted event
types decoded, others counted and passed over, unreadable ones dead-lettered with the reason) and
the count of batches failed in a row that their health reports."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import ClassVar

from fraudrt.config import Settings
from fraudrt.runtime import Actor, Batch

from ._lane_events import LaneRecord, read_lane_record


class LaneActor(Actor):
    # The event types this actor handles; every other one is passed over.
    wanted: ClassVar[frozenset[str]]

    def __init__(self) -> None:
        self.failed_batches = 0

    def subscriptions(self, settings: Settings) -> list[str]:
        return [settings.streams.name("rtdl")]

    def read_lane(self, batch: Batch, counters: dict[str, int]) -> list[LaneRecord]:
        """The batch's wanted records, decoded; counts `passed_over_total` and `rejected_total`."""
        reads: list[LaneRecord] = []
        for record in batch.records:
            read = read_lane_record(record, self.wanted)
            if read is None:
                counters["passed_over_total"] += 1
            elif isinstance(read, str):
                batch.dead_letter(record, read)
                counters["rejected_total"] += 1
            else:
                reads.append(read)
        return reads

    async def handle(self, batch: Batch) -> None:
        await self._counting_failures(self.handle_lane, batch)

    async def on_timer(self, batch: Batch) -> None:
        await self._counting_failures(self.on_lane_timer, batch)

    async def after_commit(self, batch: Batch) -> None:
        self.failed_batches = 0
        await self.after_lane_commit(batch)

    @abstractmethod
    async def handle_lane(self, batch: Batch) -> None:
        """`Actor.handle`, counted as a failure if it raises."""

    @abstractmethod
    async def on_lane_timer(self, batch: Batch) -> None:
        """`Actor.on_timer`, counted as a failure if it raises."""

    async def after_lane_commit(self, batch: Batch) -> None:
        """`Actor.after_commit` (the failure count is already reset)."""

    async def _counting_failures(self, body: Callable[[Batch], Awaitable[None]], batch: Batch) -> None:
        try:
            await body(batch)
        except BaseException:
            self.failed_batches += 1
            raise
