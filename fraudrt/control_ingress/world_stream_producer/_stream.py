"""Stream one READY run: facts view -> stream views -> one merged clock -> envelopes -> IG batches.

Pipeline: the merge (reads in a worker thread) puts every in-scope output on one event-time clock;
each event goes to its output's lane (`_lanes.OrderedLanes`): one batch of one output in flight per
lane, so each output reaches IG, and its Kinesis stream, in the view's order, and no output runs
more than `order_window_seconds` of event time ahead of the oldest unacknowledged event of any
output. Each acknowledged batch advances its output's prefix tracker and upserts that checkpoint,
one statement per batch. Delivery is at-least-once: after a crash the unacknowledged tail of each
output is pushed again, in order, and IG answers DUPLICATE for what it already admitted.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp
import anyio
import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import Envelope, encode_envelope, engine_event_id, parse_ts_utc, utc_now_ts
from fraudrt.control_ingress.scenario_runner import ReadyPayload, RunFactsView, StreamViewLocator
from fraudrt.runtime import FailureKind, classify
from fraudrt.substrate import s3_client, split_s3_uri

from ._lanes import LaneBatch, LaneStats, OrderedLanes
from ._merge import merge_by_event_time
from ._progress import PrefixTracker
from ._push import IgPusher, IgRejected, PushAbandoned, PushStats, RetryPolicy
from ._source import SourceStats, StreamViewChanged, StreamViewSource, ViewRow, arrow_s3
from ._store import Checkpoint, load_checkpoints, save_checkpoints

PRODUCER: Final = "svc:world_stream_producer"
SCHEMA_VERSION: Final = "v1"
PROGRESS_SECONDS: Final = 10.0
log = logging.getLogger("fraudrt.world_stream_producer")


class StreamRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One READY to stream. `max_events_per_output` 0 = the whole view; `speedup` 0 = as fast as possible."""

    message_id: str
    platform_run_id: str
    ready: ReadyPayload
    ig_url: str
    api_key: str | None = None
    max_events_per_output: int = 0
    speedup: float = 0.0
    push_batch_size: int = 250
    order_window_seconds: float = 30.0
    retry: RetryPolicy = RetryPolicy()

    def __repr__(self) -> str:  # the api key must not reach a log line through a repr
        return f"StreamRequest(message_id={self.message_id!r}, platform_run_id={self.platform_run_id!r})"


class StreamResult(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["STREAMED", "FAILED", "STOPPED"]
    reason: str | None = None
    emitted: dict[str, int]


class StreamFailed(Exception):
    """A permanent failure of this READY (bad facts, rejected by IG, changed view): not retried."""

    failure_kind = FailureKind.RECORD

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class WspStats:
    """Counters shared by every stream of one WSP instance (metrics and tests read them)."""

    emitted: dict[str, int] = field(default_factory=dict)
    push: PushStats = field(default_factory=PushStats)
    source: SourceStats = field(default_factory=SourceStats)
    lanes: LaneStats = field(default_factory=LaneStats)
    checkpoint_writes: int = 0


async def read_facts_view(settings: Settings, ref: str) -> RunFactsView:
    """The run facts view a READY points at.

    Only an object that is not there (404) or does not decode fails the READY (`StreamFailed`). Any
    other failure (S3 down, a 5xx, throttling) is raised as it is, for the caller's supervisor to
    retry the READY later: a READY marked FAILED can never stream in this platform run, because a
    re-sent READY carries the same message_id and is dropped as a duplicate.
    """
    bucket, key = split_s3_uri(ref) if ref.startswith("s3://") else (settings.buckets.platform, ref)
    try:
        async with s3_client(settings.s3) as s3:
            resp = await s3.get_object(Bucket=bucket, Key=key)
            async with resp["Body"] as body:
                data = await body.read()
    except Exception as exc:
        failure = classify(exc)
        if failure.kind is not FailureKind.RECORD:
            raise
        code = "RUN_FACTS_MISSING" if _http_status(exc) == 404 else "RUN_FACTS_UNREADABLE"
        raise StreamFailed(code, f"s3://{bucket}/{key}: {failure.code}: {exc}") from exc
    try:
        return msgspec.json.decode(data, type=RunFactsView)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StreamFailed("RUN_FACTS_INVALID", f"s3://{bucket}/{key}: {exc}") from None


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    return status if isinstance(status, int) else None


def _is_permanent(exc: BaseException) -> bool:
    """A failure retrying cannot cure: the stream of this READY ends FAILED with it as the reason.

    pyarrow reports a part that is not in the store as `FileNotFoundError` (an OSError, which the
    classification rightly takes for a machine fault in general); everything else is the one
    classification's call, through the `failure_kind` our own errors declare.
    """
    return isinstance(exc, FileNotFoundError) or classify(exc).kind is FailureKind.RECORD


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, StreamFailed | IgRejected):
        return str(exc)
    if isinstance(exc, StreamViewChanged):
        return f"STREAM_VIEW_CHANGED: {exc}"
    return f"STREAM_VIEW_UNREADABLE: {type(exc).__name__}: {exc}"


def _outcome(exc: BaseException) -> tuple[Literal["FAILED", "STOPPED"], str | None] | None:
    """What an exception out of the pipeline means for the READY: FAILED (permanent, with its reason),
    STOPPED (a drain cut a retry short), or None: raise it, the supervisor retries from the checkpoint.
    A group (the push workers' task group) is permanent only if every member is."""
    leaves: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        else:
            leaves.append(current)
    failed = [e for e in leaves if _is_permanent(e)]
    abandoned = [e for e in leaves if isinstance(e, PushAbandoned)]
    if len(failed) + len(abandoned) < len(leaves):
        return None
    if failed:
        return "FAILED", _failure_reason(failed[0])
    return "STOPPED", None


_Mark = tuple[int, ViewRow]  # (ordinal in its output, row)


class _Envelopes:
    """Builds the canonical envelope of a view row (event id from output id + primary key + world pins)."""

    def __init__(self, facts: RunFactsView) -> None:
        p = facts.pins
        self._pins = {"manifest_fingerprint": p.manifest_fingerprint, "parameter_hash": p.parameter_hash,
                      "seed": p.seed, "scenario_id": p.scenario_id}
        self._facts = facts
        self._trace = facts.oracle_pack_ref.oracle_pack_id

    def build(self, locator: StreamViewLocator, row: ViewRow, emitted_at: str) -> bytes:
        p = self._facts.pins
        env = Envelope(
            event_id=engine_event_id(locator.output_id, row.row, locator.primary_key, self._pins),
            event_type=locator.output_id, schema_version=SCHEMA_VERSION, ts_utc=row.ts_utc,
            platform_run_id=p.platform_run_id, scenario_run_id=p.scenario_run_id,
            manifest_fingerprint=p.manifest_fingerprint, parameter_hash=p.parameter_hash, seed=p.seed,
            scenario_id=p.scenario_id, run_id=p.run_id, producer=PRODUCER, trace_id=self._trace,
            span_id=locator.stream_view_id[:32], emitted_at_utc=emitted_at, payload=row.row)
        return encode_envelope(env)


async def stream_ready_run(settings: Settings, pool: Any, request: StreamRequest, stats: WspStats,
                           stopping: anyio.Event) -> StreamResult:
    """Stream `request.ready` to IG until done, capped, stopped or failed (see module docstring).

    Returns FAILED for permanent failures (the facts view missing or undecodable, IG rejecting a
    batch, a part gone or unreadable); raises everything else (a dependency down, IG retries
    exhausted, a bug) so the caller's supervisor retries from the checkpoint.
    """
    ready = request.ready
    try:
        facts = await read_facts_view(settings, ready.facts_view_ref)
    except StreamFailed as exc:
        return StreamResult(status="FAILED", reason=str(exc), emitted={})
    if facts.platform_run_id != ready.platform_run_id or ready.platform_run_id != request.platform_run_id:
        return StreamResult(status="FAILED", reason=f"PLATFORM_RUN_ID_MISMATCH: facts {facts.platform_run_id}, "
                            f"READY {ready.platform_run_id}, WSP {request.platform_run_id}", emitted={})
    if facts.scenario_run_id != ready.scenario_run_id:
        return StreamResult(status="FAILED", reason="SCENARIO_RUN_ID_MISMATCH", emitted={})
    by_id = {loc.output_id: loc for loc in facts.locators}
    try:
        locators = [by_id[o] for o in facts.intended_outputs]
    except KeyError as exc:
        return StreamResult(status="FAILED", reason=f"RUN_FACTS_INVALID: no locator for {exc}", emitted={})
    async with pool.acquire() as conn:
        saved = await load_checkpoints(conn, facts.platform_run_id, facts.scenario_run_id)
    pack_id = facts.oracle_pack_ref.oracle_pack_id
    trackers: list[PrefixTracker] = []
    for loc in locators:
        cp = saved.get(loc.output_id)
        if cp is not None and (cp.stream_view_id != loc.stream_view_id or cp.oracle_pack_id != pack_id):
            return StreamResult(status="FAILED", reason=f"CHECKPOINT_SCOPE_MISMATCH: {loc.output_id} was streamed "
                                "from another stream view", emitted={})
        if cp is not None and cp.part_uri is not None and cp.part_uri != _part_uri(loc, cp.position.part_index):
            return StreamResult(status="FAILED", reason=f"CHECKPOINT_SCOPE_MISMATCH: {loc.output_id} checkpoint "
                                f"points into {cp.part_uri}, not part {cp.position.part_index} of the view", emitted={})
        trackers.append(PrefixTracker(cp.emitted, cp.position) if cp else PrefixTracker())
    cap = request.max_events_per_output
    names = [loc.output_id for loc in locators]
    for name, tracker in zip(names, trackers, strict=True):
        stats.emitted[name] = tracker.acked

    def closed(rank: int) -> bool:
        return bool(cap) and trackers[rank].issued >= cap

    log.info("WSP stream start message_id=%s platform_run_id=%s scenario_run_id=%s outputs=%s "
             "max_events_per_output=%s speedup=%s resume=%s", request.message_id, facts.platform_run_id,
             facts.scenario_run_id, ",".join(names), cap or "all", request.speedup or "max",
             {n: t.acked for n, t in zip(names, trackers, strict=True)})
    fs = arrow_s3(settings.s3)
    sources = [StreamViewSource(fs, loc.parts, t.position, stats=stats.source)
               for loc, t in zip(locators, trackers, strict=True)]
    builder = _Envelopes(facts)
    status: Literal["STREAMED", "FAILED", "STOPPED"] = "STREAMED"
    reason: str | None = None

    async def save(ranks: set[int]) -> None:
        rows = [Checkpoint(output_id=names[r], stream_view_id=locators[r].stream_view_id, oracle_pack_id=pack_id,
                           position=trackers[r].position, emitted=trackers[r].acked,
                           part_uri=_part_uri(locators[r], trackers[r].position.part_index))
                for r in sorted(ranks)]
        async with pool.acquire() as conn:
            await save_checkpoints(conn, facts.platform_run_id, facts.scenario_run_id, rows)
        stats.checkpoint_writes += 1

    progress_at = [time.monotonic()]

    def progress() -> None:
        # Long streams show progress (DESIGN §7) without a line per batch.
        now = time.monotonic()
        if now - progress_at[0] >= PROGRESS_SECONDS:
            progress_at[0] = now
            log.info("WSP stream progress message_id=%s emitted=%s", request.message_id,
                     {n: t.acked for n, t in zip(names, trackers, strict=True)})

    async def deliver(pusher: IgPusher, batch: LaneBatch[_Mark]) -> None:
        await pusher.push(batch.bodies)
        tracker = trackers[batch.rank]
        moved = False
        for ordinal, row in batch.marks:
            moved = tracker.ack(ordinal, row.after) or moved
        if moved:
            stats.emitted[names[batch.rank]] = tracker.acked
            # Shielded: the tracker has moved, so a sibling lane's failure (which cancels this one)
            # must not leave the stream reporting an acknowledgement its checkpoint does not hold.
            with anyio.CancelScope(shield=True):
                await save({batch.rank})
        progress()

    lanes: OrderedLanes[_Mark] = OrderedLanes(len(locators), batch_size=max(1, request.push_batch_size),
                                              window_seconds=request.order_window_seconds, stats=stats.lanes)
    try:
        async with aiohttp.ClientSession() as session, anyio.create_task_group() as watch:
            pusher = IgPusher(session, request.ig_url, request.api_key, retry=request.retry, stats=stats.push,
                              stopping=stopping)

            async def stop_lanes_on_drain() -> None:
                await stopping.wait()
                lanes.stop()

            watch.start_soon(stop_lanes_on_drain)
            async with anyio.create_task_group() as tg:
                for rank in range(len(locators)):
                    tg.start_soon(lanes.run_lane, rank, functools.partial(deliver, pusher))
                try:
                    stopped = await _produce(sources, locators, trackers, builder, request, closed, lanes, stopping)
                finally:
                    lanes.close()
            watch.cancel_scope.cancel()
            # A drain may also come after the last event was merged, while lanes still held batches.
            if stopped or lanes.oldest_unacknowledged() is not None:
                status = "STOPPED"
    except Exception as exc:  # an ExceptionGroup from the lanes too
        outcome = _outcome(exc)
        if outcome is None:
            raise
        status, reason = outcome
    finally:
        for source in sources:
            source.close()
    emitted = {n: t.acked for n, t in zip(names, trackers, strict=True)}
    for name in names:
        stats.emitted[name] = emitted[name]
        log.info("WSP stream stop message_id=%s output_id=%s emitted=%d", request.message_id, name, emitted[name])
    log.info("WSP stream stop message_id=%s status=%s emitted_total=%d%s", request.message_id, status,
             sum(emitted.values()), f" reason={reason}" if reason else "")
    return StreamResult(status=status, reason=reason, emitted=emitted)


def _part_uri(locator: StreamViewLocator, part_index: int) -> str | None:
    return locator.parts[part_index].uri if part_index < len(locator.parts) else None


async def _produce(sources: list[StreamViewSource], locators: list[StreamViewLocator], trackers: list[PrefixTracker],
                   builder: _Envelopes, request: StreamRequest, closed: Callable[[int], bool],
                   lanes: OrderedLanes[_Mark], stopping: anyio.Event) -> bool:
    """Merge, build and hand events to their lanes; True when stopped early by `stopping`."""
    emitted_at = utc_now_ts()
    since_stamp = 0
    anchor: tuple[float, float] | None = None  # (wall clock, event time) of the first event of this session
    async for rank, row in merge_by_event_time(sources, lambda r: r.ts_utc, is_closed=closed):
        if stopping.is_set():
            return True
        event_time = parse_ts_utc(row.ts_utc).timestamp()
        if request.speedup > 0:
            if anchor is None:
                anchor = (time.monotonic(), event_time)
            wait = anchor[0] + (event_time - anchor[1]) / request.speedup - time.monotonic()
            if wait > 0.001:
                if not await lanes.flush():  # what is due now must not wait for a batch to fill
                    return True
                with anyio.move_on_after(wait):
                    await stopping.wait()
                if stopping.is_set():
                    return True
                emitted_at, since_stamp = utc_now_ts(), 0
        ordinal = trackers[rank].issue()
        if not await lanes.add(rank, event_time, builder.build(locators[rank], row, emitted_at), (ordinal, row)):
            return True
        since_stamp += 1
        if since_stamp >= request.push_batch_size:  # about once a batch, as a batch's emission time
            emitted_at, since_stamp = utc_now_ts(), 0
    return not await lanes.flush()
