"""IG's Publisher: per-stream lanes by partition key, order of refs, per-record retry (a fake bus: pure logic)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import aiohttp
import pytest

from fraudrt.control_ingress.ingestion_gate._errors import DependencyDown
from fraudrt.control_ingress.ingestion_gate._publish import Publisher, PublishItem
from fraudrt.runtime import StreamNotFoundError
from fraudrt.runtime.bus import PutEntry, PutResult


class FakeBus:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[str, list[PutEntry]]] = []
        self.seq = 0
        self.fail_first = fail_first  # this many records answer ProvisionedThroughputExceeded once

    async def put_records(self, stream: str, entries: Sequence[PutEntry]) -> list[PutResult]:
        self.calls.append((stream, list(entries)))
        out = []
        for _ in entries:
            if self.fail_first > 0:
                self.fail_first -= 1
                out.append(PutResult(error_code="ProvisionedThroughputExceededException", error_message="slow"))
                continue
            self.seq += 1
            out.append(PutResult("shardId-000000000002", str(self.seq)))
        return out


def _items(n: int, streams: Sequence[str], keys: int) -> list[PublishItem]:
    return [PublishItem(streams[i % len(streams)], hashlib.sha256(str(i % keys).encode()).hexdigest(),
                        f"event-{i}".encode()) for i in range(n)]


@pytest.mark.parametrize("lanes", [1, 3])
async def test_refs_follow_the_items_and_each_key_keeps_its_order(lanes: int) -> None:
    bus = FakeBus()
    items = _items(900, ["s-a", "s-b"], keys=37)
    refs = await Publisher(bus, lanes=lanes, min_lane_records=100).publish(items)
    assert [r.topic for r in refs] == [i.stream for i in items]
    assert all(r.partition == 2 and r.offset_kind == "kinesis_sequence" for r in refs)
    assert sum(len(entries) for _, entries in bus.calls) == len(items)  # each record sent once
    assert len({r.offset for r in refs}) == len(items)
    # Within one stream and partition key, records reached the bus in input order.
    by_key: dict[tuple[str, str], list[int]] = {}
    for item, ref in zip(items, refs, strict=True):
        by_key.setdefault((item.stream, item.partition_key), []).append(int(ref.offset))
    assert all(offsets == sorted(offsets) for offsets in by_key.values())
    per_stream = {s: [c for c in bus.calls if c[0] == s] for s in ("s-a", "s-b")}
    assert all(len(calls) == lanes for calls in per_stream.values())  # 450 records per stream, 3 lanes of ~150
    assert all(len(entries) <= 500 for _, entries in bus.calls)


async def test_only_failed_records_are_retried() -> None:
    bus = FakeBus(fail_first=3)
    items = _items(10, ["s-a"], keys=10)
    refs = await Publisher(bus).publish(items)
    assert len(refs) == 10 and len({r.offset for r in refs}) == 10
    assert [len(entries) for _, entries in bus.calls] == [10, 3]
    assert [e.data for e in bus.calls[1][1]] == [i.data for i in items[:3]]


async def test_a_budget_spent_on_failures_is_dependency_down() -> None:
    bus = FakeBus(fail_first=10**9)
    with pytest.raises(DependencyDown) as down:
        await Publisher(bus, budget_seconds=0.2).publish(_items(5, ["s-a"], keys=5))
    assert down.value.dependency == "bus" and "unpublished" in str(down.value)


class FlakyBus(FakeBus):
    """The first calls fail with `exc` (not a BusError: what another client would raise)."""

    def __init__(self, exc: BaseException, failures: int) -> None:
        super().__init__()
        self.exc = exc
        self.failures = failures

    async def put_records(self, stream: str, entries: Sequence[PutEntry]) -> list[PutResult]:
        if self.failures > 0:
            self.failures -= 1
            self.calls.append((stream, list(entries)))
            raise self.exc
        return await super().put_records(stream, entries)


async def test_any_transient_failure_is_retried_by_the_one_classification() -> None:
    """A dropped connection is a dependency failure (fraudrt.runtime.classify), whatever its type:
    the call is retried whole within the budget, never answered as a bug."""
    bus = FlakyBus(aiohttp.ServerDisconnectedError(), failures=2)
    refs = await Publisher(bus, budget_seconds=5).publish(_items(4, ["s-a"], keys=4))
    assert len(refs) == 4 and [len(e) for _, e in bus.calls] == [4, 4, 4]

    down = FlakyBus(aiohttp.ServerDisconnectedError(), failures=10**9)
    with pytest.raises(DependencyDown) as caught:
        await Publisher(down, budget_seconds=0.3).publish(_items(2, ["s-a"], keys=2))
    assert caught.value.dependency == "bus" and "ServerDisconnectedError" in str(caught.value)


async def test_a_request_the_bus_refuses_for_good_is_not_retried() -> None:
    bus = FlakyBus(StreamNotFoundError("ResourceNotFoundException", "no such stream", 400), failures=10**9)
    with pytest.raises(DependencyDown) as caught:
        await Publisher(bus, budget_seconds=30).publish(_items(2, ["s-a"], keys=2))
    assert caught.value.dependency == "bus" and len(bus.calls) == 1
