"""The Action Layer actor: every action intent of the run gets exactly one outcome.

Records of `fp.bus.rtdl.v1` arrive in shard order; everything that is not an `action_intent` is
counted and passed over. An intent is keyed by its idempotency key in `al_intents`, written in the
batch's transaction with its outcome (or its retry state), the outcome's outbox row and the
checkpoint: a copy of a known intent (a re-publish, a replay) finds its row and is not executed
again; a changed copy, or another event claiming the key, is recorded in `al_anomalies` and
changes nothing.

A new intent the policy forbids gets a DENIED outcome at once. The others are executed against the
downstream (concurrently within the batch). Success is EXECUTED; a permanent failure FAILED; a
transient failure waits in its row with a durable retry timer (`retry:<key>`) while the batch
commits and later intents flow, and `on_timer` makes the next attempt, until success, a permanent
failure, or `max_attempts` (FAILED, RETRIES_EXHAUSTED). The outcome's id depends only on its intent
(`action_outcome_id`), so whatever happens the intent has one outcome id, and it is emitted once: in
the transaction that finishes the row.

A crash before a commit rolls the row back with its outbox row; the re-read intent is executed
again and the deterministic downstream gives the same answers (a real downstream answers a repeated
idempotency key with its first result).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, NamedTuple

import anyio
import msgspec

from fraudrt.contracts import (
    ACTION_INTENT,
    ACTION_OUTCOME,
    ActionIntentPayload,
    ActionOutcomePayload,
    Attempt,
    DecisionLaneEvent,
    OutcomeStatus,
    action_outcome_id,
    decode_payload,
    derived_envelope,
    lane_event_decoder,
    parse_ts_utc,
    utc_now_ts,
)
from fraudrt.runtime import Batch, ComponentContext, Findings, LatencyHistogram

from .._lane_actor import LaneActor
from .._lane_events import LaneRecord
from .._run_counters import add_counters, load_counters
from . import _store
from ._config import ActionLayerConfig, load_config
from ._downstream import SimulatedDownstream, retry_delay_s
from ._policy import ExecutionPolicy
from ._store import COUNTERS, IntentRow

PRODUCER: Final = "action_layer"
RETRY_TIMER: Final = "retry:"
_attempts_encoder: Final = msgspec.json.Encoder()
_attempts_decoder: Final = msgspec.json.Decoder(list[Attempt])


class _Finished(NamedTuple):
    key: str
    status: str
    admitted_at_utc: str
    decided_at_utc: str


@dataclass
class _BatchOutcome:
    """What a batch (or a timer round) changed, applied to the in-memory view once it commits."""

    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    finished: list[_Finished] = field(default_factory=list)
    new_pending: list[tuple[str, float]] = field(default_factory=list)
    anomalies: list[tuple[Any, ...]] = field(default_factory=list)


def _epoch(ts_utc: str) -> float:
    return parse_ts_utc(ts_utc).timestamp()


class ActionLayer(LaneActor):
    name: ClassVar[str] = "action_layer"
    wanted: ClassVar[frozenset[str]] = frozenset({ACTION_INTENT})
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.rtdl.action_layer",)
    max_batch: ClassVar[int] = 2000

    def __init__(self, config: ActionLayerConfig | None = None, clock: Any = time.time) -> None:
        super().__init__()
        self._given = config
        self.config = config or ActionLayerConfig()
        self._clock = clock
        self.downstream = SimulatedDownstream(self.config.downstream)
        self.policy = ExecutionPolicy(self.config.policy)
        self._stream = ""
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        # idempotency key -> when it was taken in, for intents waiting on a retry (oldest first).
        self.pending: dict[str, float] = {}
        self._recent: deque[bool] = deque(maxlen=self.config.health.failure_window)
        self.decision_to_outcome = LatencyHistogram()
        self.admit_to_outcome = LatencyHistogram()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, ctx: ComponentContext) -> None:
        if self._given is None:
            self.config = load_config(ctx.options)
            self.downstream = SimulatedDownstream(self.config.downstream)
            self.policy = ExecutionPolicy(self.config.policy)
            self._recent = deque(self._recent, maxlen=self.config.health.failure_window)
        self._stream = ctx.settings.streams.name("rtdl")
        async with ctx.pool.acquire() as conn:
            loaded = await load_counters(conn, _store.COUNTERS_TABLE, ctx.platform_run_id)
            pending = await _store.load_pending(conn, ctx.platform_run_id)
        self.counters = {name: loaded.get(name, 0) for name in COUNTERS}
        self.pending = dict(pending)

    # ------------------------------------------------------------------ intake

    @staticmethod
    def _copy(out: _BatchOutcome, it: LaneRecord, held_event_id: str, held_hash: str) -> None:
        """A record whose key or event id is already held: a duplicate, or an anomaly kept on record."""
        if it.event.event_id == held_event_id and it.content_hash == held_hash:
            out.counters["duplicates_total"] += 1
            return
        kind = "PAYLOAD_MISMATCH" if it.event.event_id == held_event_id else "INTENT_CONFLICT"
        r = it.record
        out.anomalies.append((r.stream, r.shard_id, r.sequence_number, kind, it.event.event_id,
                              it.payload.idempotency_key, it.content_hash, held_event_id, held_hash))
        out.counters["anomalies_total"] += 1

    async def _take_in(self, batch: Batch, intents: list[LaneRecord], out: _BatchOutcome) -> list[LaneRecord]:
        """The intents never seen before, first copy of each; the others are duplicates or anomalies."""
        first: dict[str, LaneRecord] = {}
        key_of_event: dict[str, str] = {}
        for it in intents:
            key, eid = it.payload.idempotency_key, it.event.event_id
            held = first.get(key)
            if held is None and eid in key_of_event:
                held = first[key_of_event[eid]]
            if held is not None:
                self._copy(out, it, held.event.event_id, held.content_hash)
                continue
            first[key] = it
            key_of_event[eid] = key
        if not first:
            return []
        for h in await _store.known(batch.conn, batch.platform_run_id, list(first), list(key_of_event)):
            # The held row claims this key, and maybe the event id of an intent under another key.
            for seen in (first.pop(h.idempotency_key, None),
                         first.pop(key_of_event.get(h.intent_event_id, ""), None)):
                if seen is not None:
                    self._copy(out, seen, h.intent_event_id, h.content_hash)
        return list(first.values())

    # ------------------------------------------------------------------ execution

    async def _execute(self, calls: list[tuple[str, int]]) -> list[Attempt]:
        """One downstream call per (key, attempt), at most `concurrency` at a time, results in order.

        A fixed set of workers takes the calls in turn: a task per call cost ~26 µs of CPU against ~3 µs
        (2,000 calls, measured on the dev box)."""
        results: list[Attempt | None] = [None] * len(calls)
        todo = iter(enumerate(calls))

        async def worker() -> None:
            for i, (key, attempt) in todo:
                results[i] = await self.downstream.execute(key, attempt)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.config.downstream.concurrency, len(calls))):
                tg.start_soon(worker)
        return [r for r in results if r is not None]

    def _finish(self, batch: Batch, out: _BatchOutcome, event: DecisionLaneEvent, intent: ActionIntentPayload,
                status: OutcomeStatus, reason: str, attempts: list[Attempt]) -> tuple[str, str | None]:
        """Emit the intent's one outcome; returns (completed_at_utc, provider_ref)."""
        completed = utc_now_ts()
        provider_ref = self.downstream.provider_ref(intent.idempotency_key) if status == "EXECUTED" else None
        outcome_id = action_outcome_id(intent.decision_id, intent.action_id, intent.idempotency_key)
        payload = ActionOutcomePayload(
            outcome_id=outcome_id, action_id=intent.action_id, decision_id=intent.decision_id,
            action_kind=intent.action_kind, idempotency_key=intent.idempotency_key, status=status,
            reason_code=reason, attempts=attempts, provider_ref=provider_ref, source_event_id=intent.source_event_id,
            admitted_at_utc=intent.admitted_at_utc, decided_at_utc=intent.decided_at_utc,
            requested_at_utc=intent.requested_at_utc, completed_at_utc=completed)
        data = derived_envelope(event.pin_values(), event_id=outcome_id, event_type=ACTION_OUTCOME, ts_utc=completed,
                                producer=PRODUCER, parent_event_id=event.event_id, payload=payload)
        # Keyed by decision: a decision's intent and outcome land on one shard, in order, for the auditor.
        batch.emit(self._stream, data, partition_key=intent.decision_id, event_id=outcome_id)
        out.counters["outcome_total"] += 1
        out.counters[f"{status.lower()}_total"] += 1
        out.finished.append(_Finished(intent.idempotency_key, status, intent.admitted_at_utc, intent.decided_at_utc))
        return completed, provider_ref

    def _settle(self, batch: Batch, out: _BatchOutcome, event: DecisionLaneEvent, intent: ActionIntentPayload,
                attempts: list[Attempt], denied: str | None = None) -> tuple[str, str | None, str | None, str | None]:
        """Finish the intent after `attempts` (emitting its outcome) or set its retry timer.

        Returns (status, reason, completed_at_utc, provider_ref) for its ledger row."""
        verdict: tuple[OutcomeStatus, str] | None = ("DENIED", denied) if denied else self._verdict(attempts)
        if verdict is None:
            delay = retry_delay_s(self.config.retry, self.config.downstream.seed, intent.idempotency_key,
                                  len(attempts))
            batch.set_timer(RETRY_TIMER + intent.idempotency_key, self._clock() + delay)
            return "PENDING", None, None, None
        status, reason = verdict
        completed, provider_ref = self._finish(batch, out, event, intent, status, reason, attempts)
        return status, reason, completed, provider_ref

    def _verdict(self, attempts: list[Attempt]) -> tuple[OutcomeStatus, str] | None:
        """(status, reason) once the attempts decide the intent; None while a retry is due."""
        last = attempts[-1]
        if last.state == "SUCCEEDED":
            return "EXECUTED", "OK"
        if last.state == "PERMANENT_FAILURE":
            return "FAILED", f"PERMANENT_FAILURE:{last.provider_code}"
        if len(attempts) >= self.config.retry.max_attempts:
            return "FAILED", "RETRIES_EXHAUSTED"
        return None

    def _step(self, batch: Batch, out: _BatchOutcome, event: DecisionLaneEvent, intent: ActionIntentPayload,
              attempts: list[Attempt], *, content_hash: str, record_data: bytes, taken_in_at: float,
              denied: str | None = None) -> IntentRow:
        """The intent's ledger row after `attempts`: finished with its outcome, or PENDING with a timer."""
        status, reason, completed, provider_ref = self._settle(batch, out, event, intent, attempts, denied)
        return IntentRow(
            idempotency_key=intent.idempotency_key, intent_event_id=event.event_id, content_hash=content_hash,
            action_id=intent.action_id, decision_id=intent.decision_id, action_kind=intent.action_kind,
            outcome_id=action_outcome_id(intent.decision_id, intent.action_id, intent.idempotency_key),
            status=status, reason_code=reason, attempts=len(attempts), attempts_doc=_attempts_encoder.encode(attempts),
            provider_ref=provider_ref, intent=record_data if status == "PENDING" else None, taken_in_at=taken_in_at,
            completed_at_utc=completed)

    # ------------------------------------------------------------------ the batch


    async def handle_lane(self, batch: Batch) -> None:
        out = _BatchOutcome()
        batch.notes["al"] = out
        new = await self._take_in(batch, self.read_lane(batch, out.counters), out)
        now = self._clock()
        out.counters["intake_total"] += len(new)
        rows: list[IntentRow] = []
        to_run: list[LaneRecord] = []
        for it in new:
            reason = self.policy.deny_reason(it.payload)
            if reason is None:
                to_run.append(it)
                continue
            # The policy's answer, not a downstream call: recorded as the one (DENIED) attempt.
            attempts = [Attempt(attempt_seq=1, state="DENIED", provider_code="POLICY_DENIED")]
            rows.append(self._step(batch, out, it.event, it.payload, attempts, content_hash=it.content_hash,
                                   record_data=it.record.data, taken_in_at=now, denied=reason))
        results = await self._execute([(it.payload.idempotency_key, 1) for it in to_run])
        out.counters["attempts_total"] += len(results)
        for it, attempt in zip(to_run, results, strict=True):
            row = self._step(batch, out, it.event, it.payload, [attempt], content_hash=it.content_hash,
                             record_data=it.record.data, taken_in_at=now)
            rows.append(row)
            if row.status == "PENDING":
                out.new_pending.append((row.idempotency_key, now))
        await _store.insert_anomalies(batch.conn, batch.platform_run_id, out.anomalies)
        await _store.write_intents(batch.conn, batch.platform_run_id, rows, out.counters)

    async def on_lane_timer(self, batch: Batch) -> None:
        out = _BatchOutcome()
        batch.notes["al"] = out
        keys = [t.key[len(RETRY_TIMER):] for t in batch.timers if t.key.startswith(RETRY_TIMER)]
        waiting = await _store.lock_pending(batch.conn, batch.platform_run_id, keys)
        if not waiting:
            return
        items = []
        for p in waiting:
            event = lane_event_decoder.decode(p.intent)
            items.append((p, event, decode_payload(event), _attempts_decoder.decode(p.attempts_doc)))
        results = await self._execute([(intent.idempotency_key, len(done) + 1) for _, _, intent, done in items])
        out.counters["attempts_total"] += len(results)
        out.counters["retries_total"] += len(results)
        rows = [self._step(batch, out, event, intent, [*done, attempt], content_hash="", record_data=p.intent,
                           taken_in_at=p.taken_in_at)
                for (p, event, intent, done), attempt in zip(items, results, strict=True)]
        await _store.update_intents(batch.conn, batch.platform_run_id, rows)
        await add_counters(batch.conn, _store.COUNTERS_TABLE, batch.platform_run_id, out.counters)

    async def after_lane_commit(self, batch: Batch) -> None:
        out: _BatchOutcome | None = batch.notes.get("al")
        if out is None:
            return
        now = self._clock()
        for name, delta in out.counters.items():
            self.counters[name] += delta
        for key, at in out.new_pending:
            self.pending[key] = at
        for f in out.finished:
            self.pending.pop(f.key, None)
            self._recent.append(f.status == "FAILED")
            self.decision_to_outcome.observe(max(0.0, (now - _epoch(f.decided_at_utc)) * 1000.0))
            self.admit_to_outcome.observe(max(0.0, (now - _epoch(f.admitted_at_utc)) * 1000.0))

    # ------------------------------------------------------------------ health and metrics

    def health(self) -> tuple[str, list[str]]:
        t = self.config.health
        found = Findings()
        oldest = next(iter(self.pending.values()), None)
        if oldest is not None:
            age = self._clock() - oldest
            found.ladder(age, t.pending_age_amber_s, t.pending_age_red_s,
                         f"INTENTS_WAITING: {len(self.pending)} waiting for a retry, oldest {age:.1f}s")
        if len(self._recent) >= t.failure_min_outcomes:
            rate = sum(self._recent) / len(self._recent)
            found.ladder(rate, t.failure_rate_amber, t.failure_rate_red,
                         f"FAILURE_RATE: {rate:.1%} of the last {len(self._recent)} outcomes FAILED")
        rejected = self.counters["rejected_total"]
        found.ladder(rejected, t.rejected_amber, t.rejected_red, f"DEAD_LETTERS: {rejected} records rejected")
        anomalies = self.counters["anomalies_total"]
        if anomalies >= t.anomalies_amber:
            found.flag("AMBER", f"INTENT_ANOMALIES: {anomalies} changed or conflicting intent copies")
        found.ladder(self.failed_batches, t.failed_batches_amber, t.failed_batches_red,
                     f"BATCH_FAILURES: {self.failed_batches} failed in a row")
        return found.verdict()

    def health_details(self) -> dict[str, Any]:
        oldest = next(iter(self.pending.values()), None)
        return {"intake_total": self.counters["intake_total"], "outcome_total": self.counters["outcome_total"],
                "in_flight": len(self.pending),
                "oldest_in_flight_age_s": round(self._clock() - oldest, 3) if oldest is not None else None,
                "execution_posture": self.policy.posture, "policy_digest": self.config.policy_digest()}

    def metrics(self) -> dict[str, Any]:
        return {**self.counters, "in_flight": len(self.pending), "downstream_calls_total": self.downstream.calls,
                "execution_posture": self.policy.posture}

    def latency_histograms(self) -> dict[str, LatencyHistogram]:
        return {"decision_to_outcome": self.decision_to_outcome, "admit_to_outcome": self.admit_to_outcome}

