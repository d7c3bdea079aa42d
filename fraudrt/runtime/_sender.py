"""The one PutRecords sender: the outbox relay and IG publish through it.

- **Limits, checked before sending.** A record is at most 1 MiB (data plus partition key) with a
  partition key of 1 to 256 characters; a request holds at most 500 records and 5 MiB. A record
  that breaks a per-record limit is never sent: it comes back `rejected` with the reason, and the
  rest goes on. Requests are cut by count *and* bytes.
- **Per-entry retry.** Only the entries Kinesis reports failed are sent again, with backoff, until
  they succeed or the caller's deadline passes (then they come back unsent, for the caller to
  retry later). A call that fails as a whole is judged by `classify`: a dependency failure is
  retried; anything else (the stream does not exist, a validation error) rejects the entries of
  that call with the reason.
- **Order.** Entries go out in the order given, one request after the other, so records keep their
  order per shard, and so per partition key, as long as Kinesis takes every entry of a request.
  When it fails some entries of a request and takes later ones, PutRecords has already stored those
  later ones: a retried entry lands after them, and no sender can undo that. Sending one record per
  key per request would keep each key's order even then, but it reorders the *stream* on every
  request in which a key repeats (both events of a flow, a merchant's arrivals): consumers here rely
  on each stream arriving in event-time order, so that trade is not made. Instead every such
  inversion is counted (`order_inversions_total`, a retried entry whose key had a later record
  taken before it) and shows in metrics. Partial failures come from throttling and internal errors
  on real Kinesis; kinesalite never fails an entry.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import msgspec

from ._bus import MAX_PUT_RECORDS, PutEntry, PutResult
from ._classify import classify

MAX_RECORD_BYTES = 1024 * 1024  # data + partition key
MAX_REQUEST_BYTES = 5 * 1024 * 1024
MAX_PARTITION_KEY_CHARS = 256


class Sent(msgspec.Struct, frozen=True):
    """The outcome of one entry: published (`shard_id`, `sequence_number`), `rejected` for good
    (`error` says why), or neither (still failing when the deadline came: retry later)."""

    shard_id: str | None = None
    sequence_number: str | None = None
    error: str | None = None
    rejected: bool = False

    @property
    def ok(self) -> bool:
        return self.sequence_number is not None


@dataclass(slots=True)
class SenderStats:
    records_total: int = 0
    calls_total: int = 0
    retried_entries_total: int = 0
    failed_calls_total: int = 0
    rejected_total: int = 0
    order_inversions_total: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None


def entry_size(entry: PutEntry) -> int:
    return len(entry.data) + len(entry.partition_key.encode())


def check_entry(entry: PutEntry) -> str | None:
    """Why Kinesis would refuse this record whatever we do, or None."""
    key = entry.partition_key
    if not 1 <= len(key) <= MAX_PARTITION_KEY_CHARS:
        return f"PARTITION_KEY_INVALID: {len(key)} characters (1..{MAX_PARTITION_KEY_CHARS})"
    size = entry_size(entry)
    if size > MAX_RECORD_BYTES:
        return f"RECORD_TOO_LARGE: {size} bytes with its partition key (at most {MAX_RECORD_BYTES})"
    return None


class PutRecordsSender:
    """Publishes entries of one stream at a time; share one per process (it keeps only statistics)."""

    def __init__(self, bus: object, *, max_request_records: int = MAX_PUT_RECORDS,
                 max_request_bytes: int = MAX_REQUEST_BYTES, base_backoff: float = 0.05,
                 max_backoff: float = 2.0) -> None:
        self.bus = bus
        self.max_request_records = max_request_records
        self.max_request_bytes = max_request_bytes
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.stats = SenderStats()

    async def _put(self, stream: str, entries: Sequence[PutEntry]) -> list[PutResult]:
        results: list[PutResult] = await self.bus.put_records(stream, entries)  # type: ignore[attr-defined]
        return results

    def _next_request(self, pending: list[int], sizes: list[int]) -> list[int]:
        """The next entries in order, within the count and byte limits."""
        taken: list[int] = []
        size = 0
        for i in pending:
            if taken and (len(taken) == self.max_request_records or size + sizes[i] > self.max_request_bytes):
                break
            taken.append(i)
            size += sizes[i]
        return taken

    async def send(self, stream: str, entries: Sequence[PutEntry], *, deadline: float) -> list[Sent]:
        """One outcome per entry, in order. Never raises for a dependency failure: entries still
        unsent at `deadline` (monotonic) come back neither ok nor rejected."""
        out: list[Sent | None] = [None] * len(entries)
        sizes = [entry_size(e) for e in entries]
        pending: list[int] = []
        for i, entry in enumerate(entries):
            problem = check_entry(entry)
            if problem is None:
                pending.append(i)
            else:
                out[i] = Sent(error=problem, rejected=True)
                self.stats.rejected_total += 1
        failures = 0
        last = ""
        while pending:
            request = self._next_request(pending, sizes)
            try:
                results = await self._put(stream, [entries[i] for i in request])
            except Exception as exc:
                failure = classify(exc)
                self.stats.failed_calls_total += 1
                self.stats.consecutive_failures += 1
                last = self.stats.last_error = f"{failure.code}: {exc}"[:500]
                if not failure.transient:
                    for i in request:
                        out[i] = Sent(error=last, rejected=True)
                    self.stats.rejected_total += len(request)
                    done = set(request)
                    pending = [i for i in pending if i not in done]
                    continue
                failures += 1
                if not await self._backoff(failures, deadline, failure.backoff):
                    break
                continue
            self.stats.calls_total += 1
            self.stats.consecutive_failures = 0
            succeeded: set[int] = set()
            retried = 0
            failed_keys: set[str] = set()
            for i, res in zip(request, results, strict=True):
                if res.ok:
                    out[i] = Sent(res.shard_id, res.sequence_number)
                    succeeded.add(i)
                    if entries[i].partition_key in failed_keys:
                        # Stored ahead of an earlier record of its key, which will be retried.
                        self.stats.order_inversions_total += 1
                else:
                    retried += 1
                    failed_keys.add(entries[i].partition_key)
                    last = f"{res.error_code}: {res.error_message}"
            self.stats.records_total += len(succeeded)
            pending = [i for i in pending if i not in succeeded]
            if retried:
                self.stats.retried_entries_total += retried
                self.stats.last_error = last
                failures += 1
                if not await self._backoff(failures, deadline, 0.0):
                    break
            else:
                failures = 0
        return [o if o is not None else Sent(error=last or "UNSENT: deadline reached") for o in out]

    async def _backoff(self, failures: int, deadline: float, floor: float) -> bool:
        """Sleep before the next try; False if that would pass the deadline."""
        delay = min(self.max_backoff, max(floor, self.base_backoff * 2 ** min(failures, 8)))
        delay *= random.uniform(0.5, 1.0)
        if time.monotonic() + delay > deadline:
            return False
        await anyio.sleep(delay)
        return True
