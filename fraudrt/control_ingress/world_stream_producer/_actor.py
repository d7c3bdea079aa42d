"""The WSP actor: `handle` records READYs in the batch transaction; `background` streams them.

Recording and streaming are split so the control-bus checkpoint never waits for a world to stream,
and a READY is durable (and deduplicated by message_id) before any event leaves for IG. A restarted
WSP finds its unfinished READYs in Postgres and resumes each from its checkpoints.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, ClassVar

import anyio
import msgspec

from fraudrt.config import Settings
from fraudrt.control_ingress.scenario_runner import decode_control_message
from fraudrt.runtime import Actor, Batch, ComponentContext, classify

from ._store import SQL_PACKAGE, ReadyOutcome, mark_ready, open_ready_runs, record_ready, try_lock_ready, unlock_ready
from ._stream import StreamRequest, StreamResult, WspStats, stream_ready_run

log = logging.getLogger("fraudrt.world_stream_producer")


def ig_base_url(settings: Settings) -> str:
    return settings.wsp.ig_url or f"http://{settings.ig.host}:{settings.ig.port}"


def wsp_api_key(settings: Settings) -> str | None:
    """The key IG issues to WSP (`ingestion_gate.ig_api_key`); None while IG is not installed."""
    try:
        module = importlib.import_module("fraudrt.control_ingress.ingestion_gate")
    except ImportError:
        return None
    fn = getattr(module, "ig_api_key", None)
    return None if fn is None else str(fn(settings))


class WorldStreamProducer(Actor):
    name: ClassVar[str] = "world_stream_producer"
    sql_packages: ClassVar[tuple[str, ...]] = (SQL_PACKAGE,)
    has_background: ClassVar[bool] = True
    max_batch: ClassVar[int] = 500

    def __init__(self, *, max_events_per_output: int | None = None) -> None:
        self._cap_override = max_events_per_output
        self.stats = WspStats()
        self.ready_seen = 0
        self.ready_recorded = 0
        self.ready_duplicate = 0
        self.ready_out_of_scope = 0
        self.ready_ignored = 0
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_failed = 0
        self.last_error: str | None = None
        self.failed_message_id: str | None = None
        self.active_message_id: str | None = None
        self.retrying: str | None = None  # the transient error the last stream attempt raised
        self._writes_at_error = 0
        self._wake = anyio.Event()

    # ------------------------------------------------------------------ consuming READY

    def subscriptions(self, settings: Settings) -> list[str]:
        return [settings.streams.name("control")]

    async def handle(self, batch: Batch) -> None:
        outcomes: list[tuple[ReadyOutcome, str, str]] = []
        for record in batch.records:
            try:
                message = decode_control_message(record.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                batch.dead_letter(record, f"CONTROL_MESSAGE_INVALID: {exc}"[:500])
                continue
            outcome = await record_ready(batch.conn, message, batch.platform_run_id, stream=record.stream,
                                         shard_id=record.shard_id, sequence_number=record.sequence_number)
            outcomes.append((outcome, message.message_id, message.payload.platform_run_id))
        batch.notes["ready"] = outcomes

    async def after_commit(self, batch: Batch) -> None:
        # Counted and logged only once durable: a rolled-back batch is re-run and would count twice.
        for outcome, message_id, run in batch.notes.get("ready", []):
            self.note_outcome(outcome, message_id, run)

    def note_outcome(self, outcome: ReadyOutcome, message_id: str, run: str) -> None:
        if outcome is ReadyOutcome.NOT_READY:
            self.ready_ignored += 1
            return
        self.ready_seen += 1
        if outcome is ReadyOutcome.RECORDED:
            self.ready_recorded += 1
            log.info("WSP READY recorded message_id=%s platform_run_id=%s", message_id, run)
            self._wake.set()
        elif outcome is ReadyOutcome.DUPLICATE:
            self.ready_duplicate += 1
            log.info("WSP READY duplicate skipped message_id=%s", message_id)
        else:
            self.ready_out_of_scope += 1
            log.info("WSP READY out of scope skipped message_id=%s platform_run_id=%s", message_id, run)

    # ------------------------------------------------------------------ streaming

    async def background(self, ctx: ComponentContext) -> None:
        while not ctx.stopping.is_set():
            self._wake = anyio.Event()
            await self.stream_open_runs(ctx)
            # A READY recorded by `handle` wakes us; the timeout picks up READYs recorded elsewhere
            # (a one-shot consumer) and bounds how long a drain request waits.
            with anyio.move_on_after(1.0):
                await self._wake.wait()

    def _request(self, settings: Settings, message_id: str, platform_run_id: str, ready: Any) -> StreamRequest:
        cap = settings.wsp.max_events_per_output if self._cap_override is None else self._cap_override
        return StreamRequest(message_id=message_id, platform_run_id=platform_run_id, ready=ready,
                             ig_url=ig_base_url(settings), api_key=wsp_api_key(settings),
                             max_events_per_output=cap, speedup=settings.wsp.speedup,
                             push_batch_size=settings.wsp.push_batch_size,
                             order_window_seconds=settings.wsp.order_window_seconds)

    async def stream_open_runs(self, ctx: ComponentContext) -> list[StreamResult]:
        """Stream every unfinished READY of this platform run, oldest first."""
        async with ctx.pool.acquire() as conn:
            runs = await open_ready_runs(conn, ctx.platform_run_id)
        results: list[StreamResult] = []
        for message_id, ready, _status in runs:
            if ctx.stopping.is_set():
                break
            async with ctx.pool.acquire() as lock:
                if not await try_lock_ready(lock, message_id):
                    continue  # another WSP (a one-shot consumer, a second pack) is streaming it
                try:
                    results.append(await self._stream_one(ctx, lock, message_id, ready))
                finally:
                    with anyio.CancelScope(shield=True):
                        await unlock_ready(lock, message_id)
        return results

    async def _stream_one(self, ctx: ComponentContext, conn: Any, message_id: str, ready: Any) -> StreamResult:
        self.active_message_id = message_id
        self.streams_started += 1
        await mark_ready(conn, message_id, "STREAMING")
        try:
            result = await stream_ready_run(ctx.settings, ctx.pool,
                                            self._request(ctx.settings, message_id, ctx.platform_run_id, ready),
                                            self.stats, ctx.stopping)
        except Exception as exc:
            # Not permanent (S3 or Postgres down, IG retries exhausted, a bug): the READY stays
            # STREAMING, the supervisor restarts us with backoff and the stream resumes from its
            # checkpoints. Health is AMBER until the stream moves again.
            failure = classify(exc)
            self.retrying = f"{failure.kind}: {failure.code}: {exc}"[:500]
            self._writes_at_error = self.stats.checkpoint_writes
            raise
        finally:
            self.active_message_id = None
        self.retrying = None
        with anyio.CancelScope(shield=True):
            if result.status == "STREAMED":
                self.streams_completed += 1
                await mark_ready(conn, message_id, "STREAMED", emitted=result.emitted)
            elif result.status == "FAILED":
                self.streams_failed += 1
                self.failed_message_id = message_id
                self.last_error = result.reason
                log.error("WSP stream failed message_id=%s: %s", message_id, result.reason)
                await mark_ready(conn, message_id, "FAILED", reason=result.reason, emitted=result.emitted)
        return result

    # ------------------------------------------------------------------ health and metrics

    def health(self) -> tuple[str, list[str]]:
        if self.failed_message_id is not None:
            return "RED", [f"STREAM_FAILED: message_id={self.failed_message_id}: {self.last_error}"]
        if self.stats.push.consecutive_failures:
            return "AMBER", [f"IG_PUSH_RETRYING: {self.stats.push.consecutive_failures} failed pushes in a row "
                             f"({self.stats.push.last_error})"]
        if self.retrying is not None and self.stats.checkpoint_writes == self._writes_at_error:
            return "AMBER", [f"STREAM_RETRYING: {self.retrying}"]
        return "GREEN", []

    def metrics(self) -> dict[str, Any]:
        push = self.stats.push
        out: dict[str, Any] = {
            "ready_seen_total": self.ready_seen, "ready_recorded_total": self.ready_recorded,
            "ready_duplicate_total": self.ready_duplicate, "ready_out_of_scope_total": self.ready_out_of_scope,
            "control_ignored_total": self.ready_ignored, "streams_started_total": self.streams_started,
            "streams_completed_total": self.streams_completed, "streams_failed_total": self.streams_failed,
            "stream_emitted_total": sum(self.stats.emitted.values()), "push_requests_total": push.requests,
            "push_batches_total": push.batches, "push_retries_total": push.retries,
            "push_admitted_total": push.admitted, "push_duplicate_total": push.duplicates,
            "push_quarantined_total": push.quarantined, "parts_opened_total": self.stats.source.parts_opened,
            "rows_decoded_total": self.stats.source.rows_decoded,
            "checkpoint_writes_total": self.stats.checkpoint_writes,
            "order_window_waits_total": self.stats.lanes.window_waits,
            "order_window_wait_seconds_total": round(self.stats.lanes.window_wait_seconds, 3),
            "early_sends_total": self.stats.lanes.early_sends,
        }
        for output_id, n in self.stats.emitted.items():
            out[f"emitted.{output_id}"] = n
        return out

    def health_details(self) -> dict[str, Any]:
        return {"last_error": self.last_error or self.retrying or self.stats.push.last_error,
                "active_message_id": self.active_message_id, "emitted": dict(self.stats.emitted),
                "push_retry_statuses": dict(self.stats.push.retry_statuses)}
