"""Per-output lanes on one event-time clock: each output in order, all outputs within a window.

Order within an output. IG publishes each push as it arrives, so two pushes of one output in flight
at once reach the bus in whichever order IG finishes them, and a push waiting out a retry lets every
later one overtake it. A lane holds one output's events and has at most one batch in flight: its
next batch leaves only once IG has acknowledged the previous one, however many retries that took.
The stream therefore reaches IG, and the output's Kinesis stream, in the view's order; after a
restart the lane resumes at its acknowledged prefix (the checkpoint), so a resume keeps the order too.

Skew across outputs. Lanes run independently, so a lane stuck in retry would let the others run
ahead without bound. The producer merges all outputs on one clock and adds an event of time `t` to
its lane only while `t - oldest <= window`, where `oldest` is the event time of the oldest event
added to any lane and not yet acknowledged. Hence, when an event reaches IG, every event of every
output that is more than `window` seconds older has been acknowledged already. When the oldest
event sits in a lane's unfilled batch, that batch is sent as it is rather than waiting to fill.

Memory is bounded per lane (`depth` sealed batches, the one in flight included, plus the batch being
filled), so a stuck lane stops the producer instead of growing a queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

M = TypeVar("M")


@dataclass(eq=False)
class LaneBatch(Generic[M]):
    """One push: encoded envelopes of one output, in view order, with the caller's mark per event."""

    rank: int
    first_ts: float
    bodies: list[bytes] = field(default_factory=list)
    marks: list[M] = field(default_factory=list)


@dataclass
class LaneStats:
    window_waits: int = 0  # times the producer waited for the slowest lane to catch up
    window_wait_seconds: float = 0.0
    early_sends: int = 0  # unfilled batches sent because the window waited on them


class _Lane(Generic[M]):
    __slots__ = ("filling", "sealed")

    def __init__(self) -> None:
        self.filling: LaneBatch[M] | None = None
        self.sealed: deque[LaneBatch[M]] = deque()  # sealed[0] is in flight once its sender took it

    def oldest(self) -> float | None:
        if self.sealed:
            return self.sealed[0].first_ts
        return None if self.filling is None else self.filling.first_ts


class OrderedLanes(Generic[M]):
    """One lane per output rank. The producer calls `add` in merged (event time, rank) order, `flush`
    before it pauses or at the end, then `close`; one `run_lane` task per rank delivers its batches."""

    def __init__(self, n_lanes: int, *, batch_size: int, window_seconds: float, depth: int = 2,
                 stats: LaneStats | None = None) -> None:
        if batch_size < 1 or depth < 1 or window_seconds < 0:
            raise ValueError("batch_size and depth must be >= 1 and window_seconds >= 0")
        self._lanes: list[_Lane[M]] = [_Lane() for _ in range(n_lanes)]
        self.batch_size = batch_size
        self.window = window_seconds
        self.depth = depth
        self.stats = stats or LaneStats()
        self._bound = float("-inf")  # events up to this time pass the window without a check
        self._changed = anyio.Event()
        self._closed = False
        self._stopped = False

    # ------------------------------------------------------------------ state

    def oldest_unacknowledged(self) -> float | None:
        """Event time of the oldest event added and not yet acknowledged, over all lanes."""
        found = [t for t in (lane.oldest() for lane in self._lanes) if t is not None]
        return min(found) if found else None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def stop(self) -> None:
        """A drain: the producer's waits return and every lane ends after the batch it has in flight."""
        self._stopped = True
        self._notify()

    def close(self) -> None:
        """No more batches: each lane delivers what it holds sealed, then ends."""
        self._closed = True
        self._notify()

    # ------------------------------------------------------------------ producer side

    async def add(self, rank: int, ts: float, body: bytes, mark: M) -> bool:
        """Add one event (its time `ts` in seconds); False when stopped before it could be added."""
        if ts > self._bound and not await self._admit(ts):
            return False
        lane = self._lanes[rank]
        if lane.filling is None:
            lane.filling = LaneBatch(rank, ts)
        lane.filling.bodies.append(body)
        lane.filling.marks.append(mark)
        if len(lane.filling.bodies) >= self.batch_size:
            return await self._seal(lane)
        return not self._stopped

    async def flush(self) -> bool:
        """Send every unfilled batch as it is (before a pacing pause, at the end); False when stopped."""
        for lane in self._lanes:
            if lane.filling is not None and not await self._seal(lane):
                return False
        return not self._stopped

    async def _admit(self, ts: float) -> bool:
        waited_since: float | None = None
        try:
            while not self._stopped:
                oldest = self.oldest_unacknowledged()
                if oldest is None or ts - oldest <= self.window:
                    # The oldest unacknowledged time only grows (events arrive in time order), so this
                    # bound stays safe until the next event beyond it.
                    self._bound = (ts if oldest is None else oldest) + self.window
                    return True
                holding = next((lane for lane in self._lanes
                                if lane.filling is not None and lane.filling.first_ts < ts - self.window), None)
                if holding is not None:
                    self.stats.early_sends += 1
                    await self._seal(holding)
                    continue
                if waited_since is None:
                    waited_since = anyio.current_time()
                    self.stats.window_waits += 1
                await self._changed.wait()
            return False
        finally:
            if waited_since is not None:
                self.stats.window_wait_seconds += anyio.current_time() - waited_since

    async def _seal(self, lane: _Lane[M]) -> bool:
        while len(lane.sealed) >= self.depth and not self._stopped:
            await self._changed.wait()
        if self._stopped:
            return False
        assert lane.filling is not None
        lane.sealed.append(lane.filling)
        lane.filling = None
        self._notify()
        return True

    # ------------------------------------------------------------------ lane side

    async def run_lane(self, rank: int, deliver: Callable[[LaneBatch[M]], Awaitable[None]]) -> None:
        """Deliver rank's batches one at a time, in order; `deliver` returns once IG acknowledged all
        of the batch (retrying as long as it takes) and raises when it gives up."""
        lane = self._lanes[rank]
        while True:
            while not lane.sealed and not self._closed and not self._stopped:
                await self._changed.wait()
            if self._stopped or not lane.sealed:
                return
            await deliver(lane.sealed[0])
            lane.sealed.popleft()  # acknowledged: only now does the window move past it
            self._notify()
