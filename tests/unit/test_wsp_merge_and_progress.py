"""WSP pure logic: the k-way event-time merge and the contiguous-prefix checkpoint tracker."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from fraudrt.control_ingress.world_stream_producer import Position, PrefixTracker, merge_by_event_time

pytestmark = pytest.mark.unit


class ListSource:
    """A BatchSource over a list, in batches of `size`; counts how many batches were asked for."""

    def __init__(self, items: Sequence[tuple[str, str]], size: int = 2) -> None:
        self.items = list(items)
        self.size = size
        self.calls = 0

    async def next_batch(self) -> list[tuple[str, str]]:
        self.calls += 1
        batch, self.items = self.items[: self.size], self.items[self.size:]
        return batch


def t(sec: int) -> str:
    return f"2026-01-01T00:00:{sec:02d}.000000Z"


async def merged(sources: list[ListSource], **kw: object) -> list[tuple[int, tuple[str, str]]]:
    return [x async for x in merge_by_event_time(sources, lambda item: item[0], **kw)]  # type: ignore[arg-type]


async def test_merge_orders_by_event_time_then_output_rank() -> None:
    context = ListSource([(t(0), "arr0"), (t(1), "arr1"), (t(3), "arr3")])
    anchor = ListSource([(t(0), "anc0"), (t(1), "anc1")])
    traffic = ListSource([(t(0), "req0"), (t(0), "resp0-same-ts"), (t(1), "req1"), (t(2), "resp1")])
    out = await merged([context, anchor, traffic])
    assert [item for _rank, (_ts, item) in out] == [
        "arr0", "anc0", "req0", "resp0-same-ts", "arr1", "anc1", "req1", "resp1", "arr3"]
    assert [rank for rank, _ in out] == [0, 1, 2, 2, 0, 1, 2, 2, 0]


async def test_merge_equals_a_stable_sort_for_random_inputs() -> None:
    rng = random.Random(7)
    lanes = [sorted((t(rng.randrange(30)), f"{lane}-{i}") for i in range(rng.randrange(0, 25)))
             for lane in range(4)]
    out = await merged([ListSource(lane, size=rng.randrange(1, 5)) for lane in lanes])
    expected = sorted(((ts, rank, n, item) for rank, lane in enumerate(lanes) for n, (ts, item) in enumerate(lane)))
    assert [(rank, item) for rank, (_ts, item) in out] == [(rank, item) for _ts, rank, _n, item in expected]


async def test_merge_keeps_within_output_order_and_handles_empty_sources() -> None:
    out = await merged([ListSource([]), ListSource([(t(5), "b"), (t(5), "a")]), ListSource([])])
    assert [item for _r, (_ts, item) in out] == ["b", "a"]


async def test_closed_output_is_not_read_further() -> None:
    big = ListSource([(t(i), f"x{i}") for i in range(50)], size=2)
    small = ListSource([(t(i), f"y{i}") for i in range(5)], size=2)
    taken = {0: 0}

    def closed(rank: int) -> bool:
        return rank == 0 and taken[0] >= 3

    out = []
    async for rank, item in merge_by_event_time([big, small], lambda i: i[0], is_closed=closed):
        out.append(item[1])
        if rank == 0:
            taken[0] += 1
    assert [x for x in out if x.startswith("x")] == ["x0", "x1", "x2"]
    assert [x for x in out if x.startswith("y")] == [f"y{i}" for i in range(5)]
    assert big.calls == 2  # 4 rows fetched for 3 taken: the cap stops the reads, not only the yields


def test_prefix_advances_only_over_contiguous_acks() -> None:
    tracker = PrefixTracker()
    ordinals = [tracker.issue() for _ in range(5)]
    after = {o: Position(0, o + 1) for o in ordinals}
    assert not tracker.ack(2, after[2])
    assert not tracker.ack(1, after[1])
    assert tracker.acked == 0 and tracker.position == Position(0, 0)
    assert tracker.ack(0, after[0])
    assert tracker.acked == 3 and tracker.position == Position(0, 3)
    assert tracker.in_flight == 2
    assert not tracker.ack(4, after[4])
    assert tracker.ack(3, after[3])
    assert tracker.acked == 5 and tracker.position == Position(0, 5) and tracker.in_flight == 0


def test_prefix_ignores_repeated_and_unissued_acks() -> None:
    tracker = PrefixTracker()
    first = tracker.issue()
    assert tracker.ack(first, Position(0, 1))
    assert not tracker.ack(first, Position(9, 9))  # a retried batch acknowledged twice
    assert not tracker.ack(7, Position(9, 9))  # never issued
    assert tracker.position == Position(0, 1) and tracker.acked == 1


def test_resumed_tracker_continues_ordinals_and_position() -> None:
    tracker = PrefixTracker(acked=10, position=Position(2, 4))
    assert tracker.issue() == 10
    assert tracker.position == Position(2, 4)
    assert tracker.ack(10, Position(3, 0))  # last row of part 2: resume at the next part's start
    assert tracker.acked == 11 and tracker.position == Position(3, 0)


def test_prefix_random_ack_order_ends_at_last_position() -> None:
    rng = random.Random(3)
    tracker = PrefixTracker()
    ordinals = [tracker.issue() for _ in range(200)]
    rng.shuffle(ordinals)
    seen: set[int] = set()
    for o in ordinals:
        tracker.ack(o, Position(o // 10, o % 10 + 1))
        seen.add(o)
        contiguous = 0
        while contiguous in seen:
            contiguous += 1
        assert tracker.acked == contiguous
    assert tracker.position == Position(19, 10)
