"""The immutable records an actor sees and emits."""

from __future__ import annotations

import msgspec


class InboundRecord(msgspec.Struct, frozen=True):
    """One Kinesis record, with the envelope fields the runtime itself needs (run scope, dedupe, watermark)."""

    stream: str
    shard_id: str
    sequence_number: str
    partition_key: str
    data: bytes
    arrival_ts: float
    platform_run_id: str | None
    event_id: str | None
    # The envelope's ts_utc (event time) when it is canonical (`YYYY-MM-DDTHH:MM:SS.ffffffZ`).
    event_ts: str | None = None


class Emit(msgspec.Struct, frozen=True):
    """An envelope to publish: written to the outbox in the batch's transaction."""

    stream: str
    partition_key: str
    event_id: str
    data: bytes
