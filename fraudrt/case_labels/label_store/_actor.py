"""The Label Store actor: `label_assertion` events of `fp.bus.case.v1` in, the append-only store out.

Every source reaches the store the same way, through the bus: investigators' assertions (written
by the case API with the case's timeline, in one transaction, to the outbox), the platform's AUTO
assertions (CM, with the case), the chargeback feed's EXTERNAL ones. A crash anywhere loses none:
an emitted assertion is an outbox row until published, and this actor's checkpoint moves only with
its writes. An assertion whose ids, hash or values do not hold (`label_problem`) is dead-lettered
with the reason; known ids are DUPLICATE or MISMATCH (`_store`). Case triggers on the same stream
are not this actor's business and are passed over.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import (
    LABEL_ASSERTION,
    LabelAssertionPayload,
    case_event_decoder,
    decode_case_payload,
    label_problem,
)
from fraudrt.runtime import Actor, Batch, ComponentContext

from .._counters import RunCounters
from .._health import Thresholds, assess, common_checks
from ._store import write_assertions


class LabelStore(Actor):
    name: ClassVar[str] = "label_store"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.case_labels", "fraudrt.case_labels.label_store")

    def __init__(self) -> None:
        self.counters: RunCounters | None = None
        self.thresholds = Thresholds()

    def subscriptions(self, settings: Settings) -> list[str]:
        return [settings.streams.name("case")]

    async def start(self, ctx: ComponentContext) -> None:
        self.thresholds = Thresholds.from_options(ctx.options)
        self.counters = RunCounters(ctx.component or self.name, ctx.platform_run_id)
        async with ctx.pool.acquire() as conn:
            await self.counters.load(conn)

    async def handle(self, batch: Batch) -> None:
        assert self.counters is not None
        counts: Counter[str] = Counter()
        assertions: list[LabelAssertionPayload] = []
        for record in batch.records:
            try:
                event = case_event_decoder.decode(record.data)
                if event.event_type != LABEL_ASSERTION:
                    continue
                payload = decode_case_payload(event)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                batch.dead_letter(record, f"CONTRACT_INVALID: {exc}")
                continue
            assert isinstance(payload, LabelAssertionPayload)
            problem = label_problem(payload)
            if problem is not None:
                batch.dead_letter(record, problem)
                continue
            assertions.append(payload)
        result = await write_assertions(batch.conn, batch.platform_run_id, assertions, component=batch.component)
        counts["accepted"] += len(result.new)
        counts["duplicates"] += len(result.duplicates)
        counts["mismatches"] += len(result.mismatches)
        for a in result.new:
            counts[f"accepted_{a.source_type.lower()}"] += 1
        await self.counters.add(batch.conn, counts)
        batch.notes["counts"] = counts

    async def after_commit(self, batch: Batch) -> None:
        assert self.counters is not None
        counts: Counter[str] = batch.notes.get("counts", Counter())
        counts["dead_letters"] += len(batch.rejected)
        self.counters.commit(counts)

    def health(self) -> tuple[str, list[str]]:
        if self.counters is None:
            return "GREEN", []
        c = self.counters
        return assess(common_checks(self.thresholds, dead_letters=c["dead_letters"], mismatches=c["mismatches"]))

    def metrics(self) -> dict[str, Any]:
        if self.counters is None:
            return {}
        names = ("accepted", "duplicates", "mismatches", "dead_letters", "accepted_human", "accepted_external",
                 "accepted_auto")
        return {n: self.counters[n] for n in names}

    def health_details(self) -> dict[str, Any]:
        return self.metrics()
