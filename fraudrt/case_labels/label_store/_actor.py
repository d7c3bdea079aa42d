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

from fraudrt.config import Settings
from fraudrt.contracts import LABEL_ASSERTION, LabelAssertionPayload, label_problem
from fraudrt.runtime import Batch

from .._base import CountingActor, case_stream_payloads
from ._store import write_assertions


class LabelStore(CountingActor):
    name: ClassVar[str] = "label_store"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.case_labels", "fraudrt.case_labels.label_store")
    counter_names: ClassVar[tuple[str, ...]] = ("accepted", "duplicates", "mismatches", "dead_letters",
                                                "accepted_human", "accepted_external", "accepted_auto")

    def subscriptions(self, settings: Settings) -> list[str]:
        return [settings.streams.name("case")]

    async def handle(self, batch: Batch) -> None:
        assertions = case_stream_payloads(batch, LABEL_ASSERTION, LabelAssertionPayload, label_problem)
        result = await write_assertions(batch.conn, batch.platform_run_id, assertions, component=batch.component)
        counts: Counter[str] = Counter(accepted=len(result.new), duplicates=len(result.duplicates),
                                       mismatches=len(result.mismatches))
        for a in result.new:
            counts[f"accepted_{a.source_type.lower()}"] += 1
        await self.count(batch, counts)

    def health_details(self) -> dict[str, Any]:
        return self.metrics()
