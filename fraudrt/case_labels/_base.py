"""What the plane's actors share: per-run counters kept with each batch, health from the plane's
thresholds, metrics named by the class, and reading one event type off `fp.bus.case.v1`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgspec

from fraudrt.contracts import case_event_decoder, decode_case_payload
from fraudrt.runtime import Actor, Batch, ComponentContext

from ._counters import RunCounters
from ._health import Check, Thresholds, assess, common_checks

P = TypeVar("P")


class CountingActor(Actor):
    """Counters are loaded at `start`, added in the batch's transaction by `count`, mirrored in memory
    by `after_commit` (dead letters of the batch included); `metrics` reports `counter_names`."""

    counter_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.counters: RunCounters | None = None
        self.thresholds = Thresholds()

    async def start(self, ctx: ComponentContext) -> None:
        self.thresholds = Thresholds.from_options(ctx.options)
        self.counters = RunCounters(ctx.component or self.name, ctx.platform_run_id)
        async with ctx.pool.acquire() as conn:
            await self.counters.load(conn)

    async def count(self, batch: Batch, counts: Counter[str]) -> None:
        assert self.counters is not None
        await self.counters.add(batch.conn, counts)
        batch.notes["counts"] = counts

    async def after_commit(self, batch: Batch) -> None:
        assert self.counters is not None
        counts: Counter[str] = batch.notes.get("counts", Counter())
        counts["dead_letters"] += len(batch.rejected)
        self.counters.commit(counts)

    def checks(self) -> list[Check]:
        assert self.counters is not None
        c = self.counters
        return common_checks(self.thresholds, dead_letters=c["dead_letters"], mismatches=c["mismatches"])

    def health(self) -> tuple[str, list[str]]:
        return ("GREEN", []) if self.counters is None else assess(self.checks())

    def metrics(self) -> dict[str, Any]:
        return {} if self.counters is None else {n: self.counters[n] for n in self.counter_names}


def case_stream_payloads(batch: Batch, event_type: str, kind: type[P], problem: Callable[[P], str | None]) -> list[P]:
    """The batch's `event_type` payloads that hold (`problem` says None); other event types pass by,
    and a record that does not decode or does not hold is dead-lettered with the reason."""
    out: list[P] = []
    for record in batch.records:
        try:
            event = case_event_decoder.decode(record.data)
            if event.event_type != event_type:
                continue
            payload = decode_case_payload(event)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            batch.dead_letter(record, f"CONTRACT_INVALID: {exc}")
            continue
        assert isinstance(payload, kind)
        reason = problem(payload)
        if reason is not None:
            batch.dead_letter(record, reason)
            continue
        out.append(payload)
    return out
