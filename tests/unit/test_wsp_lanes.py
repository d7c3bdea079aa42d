"""OrderedLanes, the scheduler between WSP's merged clock and its IG pushes, with a scripted IG.

The properties consumers rely on: each output's events are delivered in the order they were added,
with one batch of a lane in flight at a time; and a batch is delivered only once every event more
than `window` seconds older than any of its events (of any lane) has been acknowledged.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import pytest

from fraudrt.control_ingress.world_stream_producer import LaneBatch, OrderedLanes

pytestmark = pytest.mark.unit

Event = tuple[int, float, int]  # (lane, event time, sequence number within the lane)


@dataclass
class ScriptedIg:
    """Acknowledges batches after a delay; a lane can be held (a batch stuck in retry)."""

    lanes: OrderedLanes[Event]
    delay: Callable[[LaneBatch[Event]], float] = lambda _b: 0.0
    acked: list[Event] = field(default_factory=list)
    in_flight: set[int] = field(default_factory=set)
    held: dict[int, anyio.Event] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    everything: list[Event] = field(default_factory=list)

    async def deliver(self, batch: LaneBatch[Event]) -> None:
        if batch.rank in self.in_flight:
            self.violations.append(f"lane {batch.rank}: two batches in flight")
        self.in_flight.add(batch.rank)
        newest = max(t for _lane, t, _n in batch.marks)
        acked = set(self.acked)
        for event in self.everything:
            if event[1] < newest - self.lanes.window and event not in acked:
                self.violations.append(f"lane {batch.rank} batch up to t={newest} before {event} was acknowledged")
                break
        gate = self.held.get(batch.rank)
        if gate is not None:
            await gate.wait()
        await anyio.sleep(self.delay(batch))
        self.acked.extend(batch.marks)
        self.in_flight.discard(batch.rank)


def world(n_lanes: int, per_lane: list[int], span: float, seed: int = 7) -> list[Event]:
    """Events of every lane merged in (time, lane) order, times spread over `span` seconds."""
    rng = random.Random(seed)
    events = [(lane, round(rng.uniform(0, span), 6), 0) for lane in range(n_lanes) for _ in range(per_lane[lane])]
    events.sort(key=lambda e: (e[1], e[0]))
    counters = [0] * n_lanes
    out = []
    for lane, t, _ in events:
        out.append((lane, t, counters[lane]))
        counters[lane] += 1
    return out


async def run(lanes: OrderedLanes[Event], ig: ScriptedIg, events: list[Event],
              during: Callable[[], Awaitable[None]] | None = None) -> bool:
    ig.everything = events
    finished = True
    async with anyio.create_task_group() as tg:
        for rank in range(len(lanes._lanes)):
            tg.start_soon(lanes.run_lane, rank, ig.deliver)
        if during is not None:
            tg.start_soon(during)
        for event in events:
            if not await lanes.add(event[0], event[1], b"{}", event):
                finished = False
                break
        else:
            finished = await lanes.flush()
        lanes.close()
    return finished


async def test_each_lane_is_delivered_in_order_one_batch_at_a_time_within_the_window() -> None:
    events = world(4, [300, 300, 300, 600], span=100.0)
    lanes: OrderedLanes[Event] = OrderedLanes(4, batch_size=25, window_seconds=5.0)
    rng = random.Random(3)
    ig = ScriptedIg(lanes, delay=lambda _b: rng.uniform(0, 0.004))

    assert await run(lanes, ig, events)

    assert ig.violations == []
    assert sorted(ig.acked) == sorted(events)
    for lane in range(4):
        assert [e for e in ig.acked if e[0] == lane] == [e for e in events if e[0] == lane]


async def test_a_lane_stuck_in_retry_holds_its_own_later_batches_and_the_others_stop_at_the_window() -> None:
    events = world(3, [200, 200, 200], span=60.0)
    lanes: OrderedLanes[Event] = OrderedLanes(3, batch_size=10, window_seconds=3.0)
    ig = ScriptedIg(lanes)
    stuck = anyio.Event()
    ig.held[1] = stuck
    seen_while_stuck: list[Event] = []

    async def release_later() -> None:
        # Let everything that can run do so, then look, then let lane 1's first batch through.
        await anyio.wait_all_tasks_blocked()
        seen_while_stuck.extend(ig.acked)
        del ig.held[1]
        stuck.set()

    assert await run(lanes, ig, events, during=release_later)

    assert ig.violations == []
    first_stuck = next(e for e in events if e[0] == 1)
    assert seen_while_stuck and all(e[0] != 1 for e in seen_while_stuck)
    # While lane 1's first batch waited, the others ran to the window past its oldest event, no further.
    assert max(t for _l, t, _n in seen_while_stuck) <= first_stuck[1] + lanes.window
    assert lanes.stats.window_waits >= 1
    for lane in range(3):
        assert [e for e in ig.acked if e[0] == lane] == [e for e in events if e[0] == lane]


async def test_an_unfilled_batch_holding_the_oldest_event_is_sent_early_rather_than_waiting_to_fill() -> None:
    # Lane 0 is sparse (one event), lane 1 dense (a batch spans 1 s): lane 0's batch would never fill.
    events = [(0, 0.0, 0)] + [(1, 0.01 * n, n - 1) for n in range(1, 2000)]
    lanes: OrderedLanes[Event] = OrderedLanes(2, batch_size=100, window_seconds=10.0)
    ig = ScriptedIg(lanes)

    assert await run(lanes, ig, events)

    assert ig.violations == []
    assert lanes.stats.early_sends == 1


async def test_depth_bounds_what_a_stuck_lane_buffers() -> None:
    events = [(0, float(n), n) for n in range(100)]
    lanes: OrderedLanes[Event] = OrderedLanes(1, batch_size=5, window_seconds=1000.0, depth=2)
    ig = ScriptedIg(lanes)
    stuck = anyio.Event()
    ig.held[0] = stuck
    buffered: list[int] = []

    async def look_then_release() -> None:
        await anyio.wait_all_tasks_blocked()
        lane = lanes._lanes[0]
        buffered.append(sum(len(b.bodies) for b in lane.sealed) + (len(lane.filling.bodies) if lane.filling else 0))
        del ig.held[0]
        stuck.set()

    assert await run(lanes, ig, events, during=look_then_release)
    # Two sealed batches (one in flight) and a full one waiting to be sealed: 15 events, not 100.
    assert buffered == [15]
    assert ig.acked == events


async def test_stop_ends_a_producer_waiting_on_the_window_and_every_lane() -> None:
    events = world(2, [50, 50], span=50.0)
    lanes: OrderedLanes[Event] = OrderedLanes(2, batch_size=5, window_seconds=1.0)
    ig = ScriptedIg(lanes)
    ig.held[0] = anyio.Event()

    async def drain() -> None:
        await anyio.wait_all_tasks_blocked()
        lanes.stop()
        ig.held[0].set()  # the push in flight ends (the real one gives up its retry on a drain)

    with anyio.fail_after(5):
        finished = await run(lanes, ig, events, during=drain)
    assert finished is False
    # Lane 0 delivered the batch it had in flight and nothing after it; nothing went past the window.
    lane0 = [e for e in ig.acked if e[0] == 0]
    assert 0 < len(lane0) <= 5 and lane0 == [e for e in events if e[0] == 0][:len(lane0)]
    held_since = next(t for lane, t, _n in events if lane == 0)
    assert max(t for _l, t, _n in ig.acked) <= held_since + lanes.window
