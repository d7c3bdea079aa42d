"""The audit log in the object store: one JSONL segment per (stream, shard) per batch.

Key: `<run>/decision_log_audit/segments/<stream>/shard=<shard>/<first_seq>.jsonl`, where first_seq
is the batch's first record of that shard: it depends only on the committed checkpoint, so a crash
between the PUT and the commit is healed by the re-run writing the same key over the orphan, and
the committed index (`dla_links.segment_ref`) names each line of the object that stands. A line
is one record DLA accepted (`NEW`) or a changed copy of one it holds (`MISMATCH`), with where it
was read and the record's bytes embedded unparsed. Exact copies of held records are not logged again.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Final, Literal

import msgspec

from fraudrt.runtime import InboundRecord

# Set only by the kill -9 test: SIGKILL right after this process's Nth segment PUT, before its batch
# commits (the window the key scheme must heal), which a random kill may miss on a fast machine.
CRASH_AFTER_SEGMENT_PUTS_ENV: Final = "FRAUDRT_TEST_DLA_CRASH_AFTER_SEGMENT_PUTS"

Verdict = Literal["NEW", "MISMATCH"]


class SegmentLine(msgspec.Struct, frozen=True):
    stream: str
    shard_id: str
    sequence_number: str
    arrival_ts: float
    event_type: str
    event_id: str
    decision_id: str
    verdict: Verdict
    content_hash: str
    record: msgspec.Raw


_encoder: Final = msgspec.json.Encoder()


def segment_key(platform_run_id: str, stream: str, shard_id: str, first_sequence: str) -> str:
    return f"{platform_run_id}/decision_log_audit/segments/{stream}/shard={shard_id}/{first_sequence}.jsonl"


def segment_ref(bucket: str, key: str, line: int) -> str:
    """Where one audited record is: the object and its 1-based line."""
    return f"s3://{bucket}/{key}#L{line}"


def line_for(record: InboundRecord, event_type: str, event_id: str, decision_id: str, verdict: Verdict,
             content_hash: str) -> SegmentLine:
    return SegmentLine(record.stream, record.shard_id, record.sequence_number, record.arrival_ts, event_type,
                       event_id, decision_id, verdict, content_hash, msgspec.Raw(record.data))


def encode(lines: list[SegmentLine]) -> bytes:
    return b"\n".join(_encoder.encode(line) for line in lines) + b"\n"


class SegmentWriter:
    """PUTs segments; counts failures for health; holds the test-only crash point."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.puts = 0
        self.bytes = 0
        self.put_failures = 0
        self.consecutive_failures = 0
        self._crash_after = int(os.environ.get(CRASH_AFTER_SEGMENT_PUTS_ENV) or 0)

    async def put(self, key: str, body: bytes) -> None:
        try:
            await self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson")
        except Exception:
            self.put_failures += 1
            self.consecutive_failures += 1
            raise
        self.consecutive_failures = 0
        self.puts += 1
        self.bytes += len(body)
        if self.puts == self._crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
