"""The one PutRecords sender, against an in-memory stand-in for Kinesis' PutRecords semantics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from fraudrt.runtime import StreamNotFoundError
from fraudrt.runtime._bus import MAX_PUT_RECORDS
from fraudrt.runtime._sender import MAX_RECORD_BYTES, MAX_REQUEST_BYTES, PutRecordsSender
from fraudrt.runtime.bus import PutEntry, PutResult

pytestmark = pytest.mark.unit


class FakeKinesis:
    """Appends accepted records to one shard in request order, like Kinesis; `fail` decides per
    (call number, entry) whether an entry is throttled, `raise_on` raises for a whole call."""

    def __init__(self, fail: Any = None, raise_on: Any = None) -> None:
        self.stored: list[tuple[str, bytes]] = []
        self.requests: list[list[PutEntry]] = []
        self.fail = fail or (lambda call, entry: False)
        self.raise_on = raise_on or (lambda call: None)

    async def put_records(self, stream: str, entries: Sequence[PutEntry]) -> list[PutResult]:
        call = len(self.requests)
        self.requests.append(list(entries))
        exc = self.raise_on(call)
        if exc is not None:
            raise exc
        assert len(entries) <= MAX_PUT_RECORDS
        assert sum(len(e.data) + len(e.partition_key.encode()) for e in entries) <= MAX_REQUEST_BYTES
        out = []
        for e in entries:
            if self.fail(call, e):
                out.append(PutResult(error_code="ProvisionedThroughputExceededException", error_message="slow"))
            else:
                self.stored.append((e.partition_key, e.data))
                out.append(PutResult("shardId-000000000000", str(len(self.stored))))
        return out


def _deadline(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


async def test_requests_are_cut_by_count_and_by_bytes() -> None:
    bus = FakeKinesis()
    sender = PutRecordsSender(bus, base_backoff=0.0)
    big = [PutEntry(b"x" * 100_000, f"k{i}") for i in range(120)]  # 12 MB: at least 3 requests by bytes
    small = [PutEntry(b"y", f"s{i}") for i in range(1200)]  # 1200 records: cut by count
    out = await sender.send("s", big + small, deadline=_deadline())
    assert all(o.ok for o in out)
    assert [k for k, _ in bus.stored] == [e.partition_key for e in big + small]
    assert max(len(r) for r in bus.requests) <= MAX_PUT_RECORDS
    assert len(bus.requests) == 5  # 12 MB in 5 MiB requests, then the small ones up to 500 a request


async def test_an_oversized_record_or_bad_key_is_rejected_and_the_rest_flows() -> None:
    bus = FakeKinesis()
    sender = PutRecordsSender(bus)
    entries = [PutEntry(b"a", "k1"), PutEntry(b"x" * MAX_RECORD_BYTES, "k2"), PutEntry(b"b", "k" * 257),
               PutEntry(b"c", ""), PutEntry(b"d", "k5")]
    out = await sender.send("s", entries, deadline=_deadline())
    assert [o.ok for o in out] == [True, False, False, False, True]
    assert out[1].rejected and out[1].error is not None and out[1].error.startswith("RECORD_TOO_LARGE")
    assert out[2].rejected and out[2].error is not None and out[2].error.startswith("PARTITION_KEY_INVALID")
    assert out[3].rejected
    assert [d for _, d in bus.stored] == [b"a", b"d"]


async def test_entries_go_out_in_order_and_only_failed_entries_are_resent() -> None:
    # A stream must arrive in the order given (event time): repeated keys stay in one request.
    bus = FakeKinesis()
    entries = [PutEntry(f"{k}-{n}".encode(), k) for n in range(3) for k in ("k1", "k2", "k1")]
    out = await PutRecordsSender(bus).send("s", entries, deadline=_deadline())
    assert all(o.ok for o in out) and len(bus.requests) == 1
    assert [d for _, d in bus.stored] == [e.data for e in entries]

    # The first try of k1's first record is throttled while k1's second is taken: stored out of
    # order (PutRecords semantics), retried once, and counted as an inversion.
    first_try = {b"k1-0"}

    def fail(call: int, entry: PutEntry) -> bool:
        if entry.data in first_try:
            first_try.discard(entry.data)
            return True
        return False

    bus = FakeKinesis(fail=fail)
    sender = PutRecordsSender(bus, base_backoff=0.0)
    entries = [PutEntry(b"k1-0", "k1"), PutEntry(b"k2-0", "k2"), PutEntry(b"k1-1", "k1"), PutEntry(b"k2-1", "k2")]
    out = await sender.send("s", entries, deadline=_deadline())
    assert all(o.ok for o in out)
    assert [d for _, d in bus.stored] == [b"k2-0", b"k1-1", b"k2-1", b"k1-0"], "succeeded entries are never re-sent"
    assert sender.stats.retried_entries_total == 1
    assert sender.stats.order_inversions_total == 1


async def test_a_transient_call_failure_is_retried_and_a_missing_stream_rejects_its_entries() -> None:
    import aiohttp

    bus = FakeKinesis(raise_on=lambda call: aiohttp.ServerDisconnectedError() if call < 2 else None)
    sender = PutRecordsSender(bus, base_backoff=0.0)
    out = await sender.send("s", [PutEntry(b"a", "k")], deadline=_deadline())
    assert out[0].ok and len(bus.requests) == 3

    gone = FakeKinesis(raise_on=lambda call: StreamNotFoundError("ResourceNotFoundException", "no stream"))
    out = await PutRecordsSender(gone).send("s", [PutEntry(b"a", "k"), PutEntry(b"b", "j")], deadline=_deadline())
    assert all(o.rejected and not o.ok for o in out)
    assert out[0].error is not None and "ResourceNotFoundException" in out[0].error


async def test_entries_still_failing_at_the_deadline_come_back_unsent_not_rejected() -> None:
    bus = FakeKinesis(fail=lambda call, entry: entry.partition_key == "hot")
    sender = PutRecordsSender(bus, base_backoff=0.01)
    out = await sender.send("s", [PutEntry(b"a", "hot"), PutEntry(b"b", "cold"), PutEntry(b"c", "hot")],
                            deadline=_deadline(0.3))
    assert [o.ok for o in out] == [False, True, False]
    assert not out[0].rejected and not out[2].rejected
    assert [d for _, d in bus.stored] == [b"b"]
