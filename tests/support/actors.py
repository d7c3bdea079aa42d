"""Test-only actors: a recorder, a pass-through emitter and a deduplicating sink.

They read the prefixed seed streams of their settings (tests give each a private prefix), so several
tests can run them against one kinesalite without seeing each other's records.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

from fraudrt.config import Settings
from fraudrt.runtime import Actor, Batch, ComponentContext, InboundRecord


def _decode(batch: Batch, record: InboundRecord) -> dict[str, Any] | None:
    """The record's JSON object, or None after dead-lettering it with the reason."""
    try:
        doc = json.loads(record.data)
    except ValueError as exc:
        batch.dead_letter(record, f"UNDECODABLE_JSON: {exc}")
        return None
    if not isinstance(doc, dict):
        batch.dead_letter(record, f"NOT_AN_OBJECT: {type(doc).__name__}")
        return None
    return doc


class Recorder(Actor):
    """Appends every record it handles to `test_handled`.

    Raises on `{"poison": true}` (every time) and dead-letters `{"reject": "<why>"}` itself.
    """

    name: ClassVar[str] = "test_recorder"
    sql_packages: ClassVar[tuple[str, ...]] = ("tests.support",)
    max_batch: ClassVar[int] = 500

    def subscriptions(self, settings: Settings) -> list[str]:
        return [settings.streams.name("traffic_fraud")]

    async def handle(self, batch: Batch) -> None:
        rows = []
        for record in batch.records:
            doc = _decode(batch, record)
            if doc is None:
                continue
            if doc.get("poison"):
                raise ValueError(f"poison record {record.event_id}")
            if "reject" in doc:
                batch.dead_letter(record, f"REJECTED: {doc['reject']}")
                continue
            rows.append((batch.component, batch.platform_run_id, record.stream, record.shard_id,
                         record.sequence_number, record.event_id))
        if rows:
            await batch.conn.executemany(
                "INSERT INTO test_handled (actor, platform_run_id, stream, shard_id, sequence_number, event_id) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                rows,
            )


class PassThrough(Actor):
    """Re-publishes each record of traffic_fraud to the rtdl stream through the outbox, same event_id."""

    name: ClassVar[str] = "test_passthrough"
    sql_packages: ClassVar[tuple[str, ...]] = ("tests.support",)

    def __init__(self) -> None:
        self._target = ""

    def subscriptions(self, settings: Settings) -> list[str]:
        return [settings.streams.name("traffic_fraud")]

    async def start(self, ctx: ComponentContext) -> None:
        self._target = ctx.settings.streams.name("rtdl")

    async def handle(self, batch: Batch) -> None:
        for record in batch.records:
            if _decode(batch, record) is None or record.event_id is None:
                continue
            batch.emit(self._target, record.data, partition_key=record.partition_key, event_id=record.event_id)


class DedupeSink(Actor):
    """Consumes the rtdl stream into `test_sink`, keyed by event_id: a re-published event is a no-op."""

    name: ClassVar[str] = "test_dedupe_sink"
    sql_packages: ClassVar[tuple[str, ...]] = ("tests.support",)

    def __init__(self) -> None:
        self.received = 0
        self.inserted = 0

    def subscriptions(self, settings: Settings) -> list[str]:
        return [settings.streams.name("rtdl")]

    async def handle(self, batch: Batch) -> None:
        records = [r for r in batch.records if _decode(batch, r) is not None and r.event_id is not None]
        inserted = 0
        if records:
            inserted = await batch.conn.fetchval(
                """
                WITH ins AS (
                    INSERT INTO test_sink (platform_run_id, event_id, stream, shard_id, sequence_number)
                    SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
                    ON CONFLICT (platform_run_id, event_id) DO NOTHING
                    RETURNING 1
                )
                SELECT count(*) FROM ins
                """,
                batch.platform_run_id, [r.event_id for r in records], [r.stream for r in records],
                [r.shard_id for r in records], [r.sequence_number for r in records],
            )
        batch.notes["received"] = len(records)
        batch.notes["inserted"] = inserted

    async def after_commit(self, batch: Batch) -> None:
        self.received += batch.notes.get("received", 0)
        self.inserted += batch.notes.get("inserted", 0)

    def metrics(self) -> dict[str, Any]:
        return {"sink_received_total": self.received, "sink_inserted_total": self.inserted}


class Deadliner(Actor):
    """Sets a durable timer per record `{"deadline_in": <seconds>}` and, when it fires, records it in
    `test_handled` (event_id = the record's); `{"cancel": "<event_id>"}` cancels that record's timer.
    Records with `{"dedupe": true}` go through the runtime's idempotent intake first."""

    name: ClassVar[str] = "test_deadliner"
    sql_packages: ClassVar[tuple[str, ...]] = ("tests.support",)

    def __init__(self) -> None:
        self.fired: list[str] = []
        self.taken_in: list[str] = []

    def subscriptions(self, settings: Settings) -> list[str]:
        return [settings.streams.name("traffic_fraud")]

    async def handle(self, batch: Batch) -> None:
        fresh = await batch.take_in()
        batch.notes["taken_in"] = [r.event_id for r in fresh]
        for record in fresh:
            doc = _decode(batch, record)
            if doc is None or record.event_id is None:
                continue
            if "deadline_in" in doc:
                batch.set_timer(record.event_id, time.time() + float(doc["deadline_in"]),
                                payload=record.sequence_number.encode())
            if "cancel" in doc:
                batch.cancel_timer(str(doc["cancel"]))

    async def on_timer(self, batch: Batch) -> None:
        await batch.conn.executemany(
            "INSERT INTO test_handled (actor, platform_run_id, stream, shard_id, sequence_number, event_id) "
            "VALUES ($1, $2, 'timer', '-', $3, $4)",
            [(batch.component, batch.platform_run_id, t.payload.decode(), t.key) for t in batch.timers])
        batch.notes["fired"] = [t.key for t in batch.timers]

    async def after_commit(self, batch: Batch) -> None:
        self.fired.extend(batch.notes.get("fired", []))
        self.taken_in.extend(batch.notes.get("taken_in", []))
