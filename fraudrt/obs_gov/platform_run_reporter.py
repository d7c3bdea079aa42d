"""`platform_run_reporter` (obs_gov pack) and `fraudrt report`: the run report, JSON and HTML.

In the pack it is an actor with a background task. The actor reads the decision lane's streams
(`fp.bus.rtdl.v1`, `fp.bus.audit.v1`, `fp.bus.case.v1`) from its checkpoint, like any consumer, and
folds each new event into additive counters in the batch transaction (`_aggregate`): that is the
report's cursor, so a round never rescans the run. The background task writes the report every
`interval_seconds` (default 5) from those counters, the components' health/metrics files, IG's
decisions (when IG's counters moved), the oracle's truth (once) and the governance log.

`fraudrt report` (one-shot) uses the pack's counters when the obs_gov pack runs for the run, and
otherwise reads the three streams from TRIM_HORIZON itself and folds them in memory.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, ClassVar

import anyio
import msgspec

from fraudrt._daemon import is_alive
from fraudrt.config import Settings
from fraudrt.runtime import Actor, Batch, ComponentContext, classify
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import load_pack_state

from ._aggregate import fold
from ._gather import COMPONENT, Gatherer, report_paths
from ._state import load_counts, save, score_pending

STREAMS = ("rtdl", "audit", "case")
OBS_GOV_PACK = "local_parity_obs_gov_v0"


def _data(record: Any) -> bytes:
    data: bytes = record.data
    return data


class PlatformRunReporter(Actor):
    name: ClassVar[str] = COMPONENT
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.obs_gov",)
    has_background: ClassVar[bool] = True

    def __init__(self) -> None:
        self.gatherer: Gatherer | None = None
        self.rounds = 0
        self.round_failures = 0
        self.last_error: str | None = None
        self.last_round_at: float | None = None
        self.last_round_ms = 0.0
        self.interval = 5.0
        self.folded = Counter[str]()
        self.completed = False

    def subscriptions(self, settings: Settings) -> list[str]:
        return [settings.streams.name(s) for s in STREAMS]

    def _gatherer(self, ctx: ComponentContext) -> Gatherer:
        if self.gatherer is None:
            self.gatherer = Gatherer(ctx.settings, ctx.platform_run_id, ctx.pool)
        return self.gatherer

    async def start(self, ctx: ComponentContext) -> None:
        self._gatherer(ctx)

    async def handle(self, batch: Batch) -> None:
        records = await batch.take_in()
        truth = self.gatherer.truth if self.gatherer else None
        folded = fold(records, truth.label if truth else None, _data)
        for record, reason in folded.rejected:
            batch.dead_letter(record, reason)
        await save(batch.conn, batch.platform_run_id, folded)
        batch.notes["folded"] = sum(v for k, v in folded.deltas.items() if "." not in k)

    async def after_commit(self, batch: Batch) -> None:
        self.folded["events"] += int(batch.notes.get("folded", 0))

    async def background(self, ctx: ComponentContext) -> None:
        gatherer = self._gatherer(ctx)
        self.interval = float(ctx.options.get("interval_seconds", 5.0))
        while not ctx.stopping.is_set():
            started = time.monotonic()
            try:
                if gatherer.truth is not None:
                    await score_pending(ctx.pool, ctx.platform_run_id, gatherer.truth.label)
                async with ctx.pool.acquire() as conn:
                    counts, unscored = await load_counts(conn, ctx.platform_run_id)
                report = await gatherer.round(counts, unscored)
                self.completed = bool(report["run_completed"]["run_completed"])
                self.rounds += 1
                self.last_error = None
                self.last_round_at = time.monotonic()
                self.last_round_ms = (self.last_round_at - started) * 1000
            except Exception as exc:
                if not classify(exc).transient:
                    raise
                self.round_failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                ctx.logger.warning("report round failed (will retry): %s", self.last_error)
            with anyio.move_on_after(self.interval):
                await ctx.stopping.wait()

    def health(self) -> tuple[str, list[str]]:
        reasons = []
        if self.last_error:
            reasons.append(f"REPORT_NOT_WRITTEN: {self.last_error}")
        if self.last_round_at is not None and time.monotonic() - self.last_round_at > 6 * self.interval:
            reasons.append(f"REPORT_STALE: last report {time.monotonic() - self.last_round_at:.0f} s ago")
        return ("AMBER" if reasons else "GREEN"), reasons

    def metrics(self) -> dict[str, Any]:
        return {"report_rounds_total": self.rounds, "report_round_failures_total": self.round_failures,
                "events_folded_total": self.folded["events"],
                "run_completed": "true" if self.completed else "false",
                "last_round_ms": f"{self.last_round_ms:.1f}"}


# ------------------------------------------------------------------------------ one-shot


def obs_gov_pack_running(settings: Settings, platform_run_id: str) -> bool:
    state = load_pack_state(settings, OBS_GOV_PACK)
    return bool(state and state.platform_run_id == platform_run_id and is_alive(state.process))


class _Peek(msgspec.Struct):
    event_id: str | None = None
    platform_run_id: str | None = None


async def fold_from_bus(settings: Settings, platform_run_id: str, label: Any) -> tuple[Counter[str], int]:
    """The run's decision-lane events read from TRIM_HORIZON and folded in memory (each event id once)."""
    peek = msgspec.json.Decoder(_Peek)
    seen: set[str] = set()
    counts: Counter[str] = Counter()
    unscored = 0
    async with KinesisBus(settings.kinesis) as bus:
        for stream in (settings.streams.name(s) for s in STREAMS):
            for shard in await bus.list_shards(stream):
                iterator: str | None = await bus.get_shard_iterator(stream, shard)
                while iterator:
                    got = await bus.get_records(stream, shard, iterator)
                    mine = []
                    for r in got.records:
                        try:
                            p = peek.decode(r.data)
                        except (msgspec.DecodeError, msgspec.ValidationError):
                            continue
                        if p.platform_run_id == platform_run_id and p.event_id and p.event_id not in seen:
                            seen.add(p.event_id)
                            mine.append(r)
                    folded = fold(mine, label, _data)
                    counts.update(folded.deltas)
                    unscored += len(folded.unscored)
                    if not got.records and got.millis_behind == 0:
                        break
                    iterator = got.next_iterator
    return counts, unscored


async def one_shot_report(settings: Settings, platform_run_id: str, *, from_bus: bool | None = None,
                          pool: Any | None = None) -> tuple[dict[str, Any], Any]:
    """Write the run's report once; returns (report, (json path, html path))."""
    gatherer = Gatherer(settings, platform_run_id, pool)
    use_bus = not obs_gov_pack_running(settings, platform_run_id) if from_bus is None else from_bus
    if use_bus:
        from fraudrt.substrate import s3_client

        async with s3_client(settings.s3) as s3:
            truth = await gatherer.load_truth(s3)
        counts, unscored = await fold_from_bus(settings, platform_run_id, truth.label if truth else None)
        gatherer.notes.append("decision-lane counts read from the bus by this one-shot report")
    else:
        assert pool is not None, "the pack's counters are read through a pool"
        async with pool.acquire() as conn:
            loaded, unscored = await load_counts(conn, platform_run_id)
        counts = Counter(loaded)
    report = await gatherer.round(dict(counts), unscored)
    return report, report_paths(settings, platform_run_id)
