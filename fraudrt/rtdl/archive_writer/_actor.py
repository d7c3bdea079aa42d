"""Archive every record of the run in batched segment objects, one per (stream, shard) per batch.

Segment key: `<run>/archive/<stream>/shard=<shard>/<first_seq>.jsonl`. It depends only on the first
sequence number after the committed checkpoint, so a crash between PUT and commit is healed by the
re-run overwriting the same object: the archive holds each record exactly once.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections import defaultdict
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import msgspec

from fraudrt.config import Settings
from fraudrt.runtime import Actor, Batch, ComponentContext, InboundRecord
from fraudrt.substrate import s3_client

# Set only by the archive kill -9 test: SIGKILL right after this process's Nth segment PUT, before
# its batch commits (the window the key scheme must heal), which a random kill may miss on a fast box.
CRASH_AFTER_SEGMENT_PUTS_ENV = "FRAUDRT_TEST_CRASH_AFTER_SEGMENT_PUTS"


class SegmentLine(msgspec.Struct, frozen=True):
    stream: str
    shard_id: str
    sequence_number: str
    partition_key: str
    arrival_ts: float
    # The record's bytes as they were on the bus (an envelope's JSON, embedded unparsed).
    record: msgspec.Raw


_encoder = msgspec.json.Encoder()


def segment_key(platform_run_id: str, stream: str, shard_id: str, first_sequence: str) -> str:
    return f"{platform_run_id}/archive/{stream}/shard={shard_id}/{first_sequence}.jsonl"


def _encode_segment(records: list[InboundRecord]) -> bytes:
    lines = []
    for r in records:
        try:
            raw = msgspec.Raw(msgspec.json.decode(r.data, type=msgspec.Raw))
        except msgspec.DecodeError:
            raw = msgspec.Raw(_encoder.encode(r.data.decode("utf-8", "replace")))
        lines.append(_encoder.encode(SegmentLine(r.stream, r.shard_id, r.sequence_number, r.partition_key,
                                                 r.arrival_ts, raw)))
    return b"\n".join(lines) + b"\n"


class ArchiveWriter(Actor):
    name: ClassVar[str] = "archive_writer"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.rtdl.archive_writer",)
    max_batch: ClassVar[int] = 5000

    def __init__(self) -> None:
        self._stack: AsyncExitStack | None = None
        self._s3: Any = None
        self._bucket = ""
        self.archived = 0
        self.segments = 0
        self.put_failures = 0
        self.consecutive_put_failures = 0
        self._puts = 0
        self._crash_after_puts = int(os.environ.get(CRASH_AFTER_SEGMENT_PUTS_ENV) or 0)

    def subscriptions(self, settings: Settings) -> list[str]:
        control = settings.streams.name("control")
        return [s for s in settings.streams.all_names() if s != control]

    async def start(self, ctx: ComponentContext) -> None:
        self._stack = AsyncExitStack()
        # Fail fast: the runner retries an unreachable object store with backoff (never dead-letters).
        self._s3 = await self._stack.enter_async_context(
            s3_client(ctx.settings.s3, max_attempts=1, connect_timeout=2.0, read_timeout=30.0))
        self._bucket = ctx.settings.buckets.platform

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    async def handle(self, batch: Batch) -> None:
        groups: dict[tuple[str, str], list[InboundRecord]] = defaultdict(list)
        for record in batch.records:
            groups[(record.stream, record.shard_id)].append(record)
        rows = []
        for (stream, shard), records in groups.items():
            body = _encode_segment(records)
            key = segment_key(batch.platform_run_id, stream, shard, records[0].sequence_number)
            try:
                await self._s3.put_object(Bucket=self._bucket, Key=key, Body=body,
                                          ContentType="application/x-ndjson")
            except Exception:
                self.put_failures += 1
                self.consecutive_put_failures += 1
                raise
            self.consecutive_put_failures = 0
            self._puts += 1
            if self._puts == self._crash_after_puts:
                os.kill(os.getpid(), signal.SIGKILL)
            rows.append((batch.platform_run_id, stream, shard, records[0].sequence_number,
                         records[-1].sequence_number, len(records), key, hashlib.sha256(body).hexdigest(),
                         len(body)))
        if rows:
            await batch.conn.executemany(
                "INSERT INTO archive_segments (platform_run_id, stream, shard_id, first_sequence, last_sequence, "
                "record_count, object_key, sha256, bytes) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                rows,
            )
        batch.notes["segments"] = rows

    async def after_commit(self, batch: Batch) -> None:
        rows = batch.notes.get("segments", [])
        self.segments += len(rows)
        self.archived += sum(r[5] for r in rows)

    def health(self) -> tuple[str, list[str]]:
        if self.consecutive_put_failures >= 3:
            return "RED", [f"OBJECT_STORE_UNHEALTHY: {self.consecutive_put_failures} failed segment writes in a row"]
        if self.consecutive_put_failures:
            return "AMBER", ["OBJECT_STORE_RETRYING"]
        return "GREEN", []

    def metrics(self) -> dict[str, Any]:
        return {"archived_total": self.archived, "segments_total": self.segments,
                "segment_put_failures_total": self.put_failures}
