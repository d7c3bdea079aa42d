"""The Decision Log/Audit actor: every decision-lane record of the run, logged once and joined to its chain.

Per batch, in the runtime's transaction: the records' event ids are looked up in `dla_links` (an
exact copy of a held record is a duplicate, counted; a changed copy a MISMATCH anomaly, logged and
recorded, never applied); the new records and the mismatched copies are written to one segment
object per shard (`_segments`), then indexed (`dla_links`, with the line of each) and joined to their
chains (`dla_chains`, `_lineage`). A chain that becomes whole publishes its RESOLVED `audit_record`
to `fp.bus.audit.v1` through the outbox; a chain first seen incomplete gets a durable grace timer
(`grace:<decision_id>`), cancelled when it resolves. When a timer fires on a chain still incomplete,
the chain is UNRESOLVED: counted in `lineage_unresolved_total` and published as an UNRESOLVED audit
record with its reasons. If its missing records arrive later it resolves late: a RESOLVED record
(its own event id, naming the UNRESOLVED one it supersedes) is published, `lineage_unresolved_total`
goes down by one and `late_resolved_total` up by one.

The run's counts are kept in `dla_run_counters` (added per batch), the reconciliation artifact is
written from memory every couple of seconds by the background task: nothing rescans the run.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, NamedTuple

import anyio
import msgspec

from fraudrt.contracts import (
    ACTION_INTENT,
    ACTION_OUTCOME,
    AUDIT_RECORD,
    DECISION_RESPONSE,
    ActionIntentPayload,
    ActionOutcomePayload,
    AuditRecordPayload,
    DecisionPayload,
    audit_chain_id,
    audit_record_event_id,
    derived_envelope,
    parse_ts_utc,
    utc_now_ts,
    write_json_atomic,
)
from fraudrt.runtime import Batch, ComponentContext, Findings, LatencyHistogram
from fraudrt.runtime.packs import component_dir
from fraudrt.substrate import s3_client

from .._lane_actor import LaneActor
from .._lane_events import LaneRecord
from .._run_counters import load_counters
from . import _segments, _store
from ._config import DecisionLogAuditConfig, load_config
from ._lineage import ACTION_OF_KIND, Chain, Fact, join
from ._store import COUNTERS, Anomaly, ChainRow, Link

PRODUCER: Final = "decision_log_audit"
GRACE_TIMER: Final = "grace:"
LANE_TYPES: Final = frozenset({DECISION_RESPONSE, ACTION_INTENT, ACTION_OUTCOME})
_pins_encoder: Final = msgspec.json.Encoder()
_pins_decoder: Final = msgspec.json.Decoder(dict[str, Any])


def _fact(read: LaneRecord, segment_ref: str | None) -> Fact:
    p = read.payload
    eid = read.event.event_id
    if isinstance(p, DecisionPayload):
        return Fact("decision", eid, p.decision_id, p.source_event.event_id, p.action, p.timings.admitted_at_utc,
                    p.timings.decided_at_utc, segment_ref=segment_ref)
    if isinstance(p, ActionIntentPayload):
        return Fact("intent", eid, p.decision_id, p.source_event_id, ACTION_OF_KIND[p.action_kind],
                    p.admitted_at_utc, p.decided_at_utc, action_id=p.action_id, segment_ref=segment_ref)
    assert isinstance(p, ActionOutcomePayload)
    return Fact("outcome", eid, p.decision_id, p.source_event_id, ACTION_OF_KIND[p.action_kind], p.admitted_at_utc,
                p.decided_at_utc, action_id=p.action_id, outcome_id=p.outcome_id, outcome_status=p.status,
                segment_ref=segment_ref)


def _decision_of(read: LaneRecord) -> str:
    decision_id: str = read.payload.decision_id
    return decision_id


def _epoch(ts_utc: str) -> float:
    return parse_ts_utc(ts_utc).timestamp()


class _Audit(NamedTuple):
    decision_id: str
    status: str
    admitted_at_utc: str


@dataclass
class _BatchOutcome:
    """What a batch (or a timer round) changed, applied to the in-memory view once it commits."""

    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    audits: list[_Audit] = field(default_factory=list)
    unresolved: list[tuple[str, list[str], float]] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)


class DecisionLogAudit(LaneActor):
    name: ClassVar[str] = "decision_log_audit"
    wanted: ClassVar[frozenset[str]] = LANE_TYPES
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.rtdl.decision_log_audit",)
    max_batch: ClassVar[int] = 2000
    has_background: ClassVar[bool] = True

    def __init__(self, config: DecisionLogAuditConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._given = config
        self.config = config or DecisionLogAuditConfig()
        self._clock = clock
        self._stack: AsyncExitStack | None = None
        self.segments: _segments.SegmentWriter | None = None
        self._bucket = ""
        self._audit_stream = ""
        self._run = ""
        self._reconciliation_path: Path | None = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        # decision id -> (reasons, since): the unresolved chains listed in the reconciliation (capped).
        self.unresolved: dict[str, tuple[list[str], float]] = {}
        self.recent_segments: deque[str] = deque(maxlen=self.config.evidence_segments)
        self.admit_to_audit = LatencyHistogram()
        self._dirty = True

    # ------------------------------------------------------------------ lifecycle

    async def start(self, ctx: ComponentContext) -> None:
        if self._given is None:
            self.config = load_config(ctx.options)
            self.recent_segments = deque(self.recent_segments, maxlen=self.config.evidence_segments)
        self._run = ctx.platform_run_id
        self._bucket = ctx.settings.buckets.platform
        self._audit_stream = ctx.settings.streams.name("audit")
        self._stack = AsyncExitStack()
        # Fail fast: the runner waits out an unreachable object store with backoff (never dead-letters).
        s3 = await self._stack.enter_async_context(
            s3_client(ctx.settings.s3, max_attempts=1, connect_timeout=2.0, read_timeout=30.0))
        self.segments = _segments.SegmentWriter(s3, self._bucket)
        async with ctx.pool.acquire() as conn:
            loaded = await load_counters(conn, _store.COUNTERS_TABLE, ctx.platform_run_id)
            unresolved = await _store.load_unresolved(conn, ctx.platform_run_id, self.config.unresolved_list_cap)
        self.counters = {name: loaded.get(name, 0) for name in COUNTERS}
        self.unresolved = {d: (reasons, at) for d, reasons, at in unresolved}
        # Set last: a start that failed before the counters were loaded must not write a
        # reconciliation of zeros over the real one when it is stopped.
        self._reconciliation_path = (component_dir(ctx.settings, ctx.platform_run_id, ctx.component or self.name)
                                     / "reconciliation" / "last_reconciliation.json")
        self._dirty = True

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
        self.write_reconciliation()

    async def background(self, ctx: ComponentContext) -> None:
        """Write the reconciliation artifact when something changed, every few seconds, until the drain."""
        while not ctx.stopping.is_set():
            with anyio.move_on_after(self.config.reconciliation_interval_seconds):
                await ctx.stopping.wait()
            if self._dirty and self._reconciliation_path is not None:
                # Built on the event loop (consistent with the counters), written (fsync) off it.
                self._dirty = False
                await anyio.to_thread.run_sync(write_json_atomic, self._reconciliation_path, self.reconciliation())

    # ------------------------------------------------------------------ intake

    @staticmethod
    def _sort(reads: list[LaneRecord], held: dict[str, str],
              out: _BatchOutcome) -> list[tuple[LaneRecord, _segments.Verdict, str | None]]:
        """Each record that goes into the log: NEW (first copy of an event) or MISMATCH (a changed copy,
        with what the held copy's hash is); exact copies are counted as duplicates and dropped."""
        first: dict[str, LaneRecord] = {}
        for read in reads:
            first.setdefault(read.event.event_id, read)
        logged: list[tuple[LaneRecord, _segments.Verdict, str | None]] = []
        for read in reads:
            eid = read.event.event_id
            known = held.get(eid)
            if known is None and first[eid] is read:
                logged.append((read, "NEW", None))
                continue
            holder_hash = known if known is not None else first[eid].content_hash
            if holder_hash == read.content_hash:
                out.counters["duplicates_total"] += 1
            else:
                logged.append((read, "MISMATCH", holder_hash))
        return logged

    def _segments_of(self, batch: Batch, logged: list[tuple[LaneRecord, _segments.Verdict, str | None]],
                     out: _BatchOutcome) -> tuple[dict[str, bytes], list[str]]:
        """The batch's segment objects (key -> body), one per shard, and each logged record's ref, in order."""
        starts: dict[tuple[str, str], str] = {}
        for record in batch.records:  # the first record after the checkpoint names the segment
            starts.setdefault((record.stream, record.shard_id), record.sequence_number)
        groups: dict[str, list[_segments.SegmentLine]] = {}
        refs: list[str] = []
        for read, verdict, _ in logged:
            r = read.record
            key = _segments.segment_key(batch.platform_run_id, r.stream, r.shard_id, starts[(r.stream, r.shard_id)])
            lines = groups.setdefault(key, [])
            lines.append(_segments.line_for(r, read.event.event_type, read.event.event_id, _decision_of(read),
                                            verdict, read.content_hash))
            refs.append(_segments.segment_ref(self._bucket, key, len(lines)))
        bodies = {key: _segments.encode(lines) for key, lines in groups.items()}
        out.segments.extend(bodies)
        out.counters["segments_total"] += len(bodies)
        out.counters["segment_bytes_total"] += sum(len(b) for b in bodies.values())
        return bodies, refs

    async def _log(self, bodies: dict[str, bytes]) -> None:
        assert self.segments is not None
        for key, body in bodies.items():
            await self.segments.put(key, body)

    # ------------------------------------------------------------------ chains and audit records

    def _emit_audit(self, batch: Batch, out: _BatchOutcome, chain: Chain, reasons: list[str], pins: str,
                    supersedes: str | None = None) -> None:
        now_ts = utc_now_ts()
        status = "RESOLVED" if not reasons else "UNRESOLVED"
        audit_id = audit_chain_id(batch.platform_run_id, chain.decision_id)
        event_id = audit_record_event_id(audit_id, status)
        payload = AuditRecordPayload(
            audit_id=audit_id, decision_id=chain.decision_id, source_event_id=chain.source_event_id,
            action=chain.action, chain_status=status, unresolved_reasons=reasons,  # type: ignore[arg-type]
            intent_ids=list(chain.intent_ids), outcome_ids=list(chain.outcome_ids),
            outcome_statuses=list(chain.outcome_statuses), segment_ref=chain.decision_ref,  # type: ignore[arg-type]
            admitted_at_utc=chain.admitted_at_utc, decided_at_utc=chain.decided_at_utc, audited_at_utc=now_ts,
            admit_to_audit_ms=round(max(0.0, (_epoch(now_ts) - _epoch(chain.admitted_at_utc)) * 1000.0), 3),
            supersedes_event_id=supersedes)
        data = derived_envelope(_pins_decoder.decode(pins), event_id=event_id, event_type=AUDIT_RECORD, ts_utc=now_ts,
                                producer=PRODUCER, parent_event_id=chain.decision_event_id, payload=payload)
        batch.emit(self._audit_stream, data, partition_key=chain.decision_id, event_id=event_id)
        out.counters["audit_records_total"] += 1
        out.audits.append(_Audit(chain.decision_id, status, chain.admitted_at_utc))

    def _conclude(self, batch: Batch, out: _BatchOutcome, before: ChainRow | None, row: ChainRow,
                  now: float) -> ChainRow:
        """The chain's row after this batch joined it, with its audit record emitted if it resolved."""
        chain, reasons = row.chain, row.chain.missing()
        was = before.chain.status if before is not None else None
        if was == "RESOLVED":
            return row  # audited; a late link was flagged as an anomaly
        if not reasons:
            supersedes = None
            if was == "PENDING":
                batch.cancel_timer(GRACE_TIMER + chain.decision_id)
            elif was == "UNRESOLVED":
                supersedes = audit_record_event_id(audit_chain_id(batch.platform_run_id, chain.decision_id),
                                                   "UNRESOLVED")
                out.counters["lineage_unresolved_total"] -= 1
                out.counters["late_resolved_total"] += 1
                out.late.append(chain.decision_id)
            resolved = msgspec.structs.replace(chain, status="RESOLVED")
            self._emit_audit(batch, out, resolved, [], row.pins, supersedes)
            out.counters["chains_resolved_total"] += 1
            return row._replace(chain=resolved, reasons=[], resolved_at=now)
        if was is None:
            batch.set_timer(GRACE_TIMER + chain.decision_id, now + self.config.grace_seconds)
        return row._replace(reasons=reasons)

    def _join(self, batch: Batch, new: list[tuple[LaneRecord, str]], before: dict[str, ChainRow],
              out: _BatchOutcome) -> list[ChainRow]:
        """Join the new records to their chains (`before`: as held, locked), in arrival order: the
        chains' rows to write back."""
        if not new:
            return []
        now = self._clock()
        rows: dict[str, ChainRow] = {}
        for read, ref in new:
            fact = _fact(read, ref)
            row = rows.get(fact.decision_id) or before.get(fact.decision_id)
            if row is None:
                out.counters["chains_total"] += 1
                row = ChainRow(Chain.first(fact), [], _pins_encoder.encode(read.event.pin_values()).decode(), now, None,
                               None)
            chain, anomaly = join(row.chain, fact)
            rows[fact.decision_id] = row._replace(chain=chain)
            if anomaly is not None:
                r = read.record
                out.anomalies.append(Anomaly(r.stream, r.shard_id, r.sequence_number, anomaly.split(":", 1)[0],
                                             read.event.event_id, fact.decision_id, anomaly, ref))
                out.counters["conflicts_total"] += 1
            if chain is not row.chain or anomaly is None:
                self._count_fact(out, read)
        return [self._conclude(batch, out, before.get(d), row, now) for d, row in rows.items()]

    @staticmethod
    def _count_fact(out: _BatchOutcome, read: LaneRecord) -> None:
        p = read.payload
        if isinstance(p, DecisionPayload):
            out.counters[f"decisions.{p.action}"] += 1
        elif isinstance(p, ActionOutcomePayload):
            out.counters[f"outcomes.{p.status}"] += 1

    # ------------------------------------------------------------------ the batch


    async def handle_lane(self, batch: Batch) -> None:
        out = _BatchOutcome()
        batch.notes["dla"] = out
        reads = self.read_lane(batch, out.counters)
        held: dict[str, str] = {}
        before: dict[str, ChainRow] = {}
        if reads:
            held, before = await _store.read_batch(batch.conn, batch.platform_run_id,
                                                   list(dict.fromkeys(r.event.event_id for r in reads)),
                                                   list(dict.fromkeys(_decision_of(r) for r in reads)))
        logged = self._sort(reads, held, out)
        bodies, refs = self._segments_of(batch, logged, out)
        links: list[Link] = []
        new: list[tuple[LaneRecord, str]] = []
        for (read, verdict, holder_hash), ref in zip(logged, refs, strict=True):
            r, eid = read.record, read.event.event_id
            if verdict == "MISMATCH":
                out.anomalies.append(Anomaly(
                    r.stream, r.shard_id, r.sequence_number, "MISMATCH", eid, _decision_of(read),
                    f"MISMATCH: {eid} is held with content hash {holder_hash}; this copy has {read.content_hash}",
                    ref))
                out.counters["mismatches_total"] += 1
                continue
            links.append(Link(eid, read.event.event_type, _decision_of(read), getattr(read.payload, "action_id", None),
                              read.content_hash, ref, r.stream, r.shard_id, r.sequence_number))
            out.counters[f"records.{read.event.event_type}"] += 1
            new.append((read, ref))
        # The segment PUT and the index work overlap: the batch commits only once both are done.
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._log, bodies)
            chains = self._join(batch, new, before, out)
            await _store.insert_anomalies(batch.conn, batch.platform_run_id, out.anomalies)
            await _store.write_batch(batch.conn, batch.platform_run_id, links, chains, out.counters)

    async def on_lane_timer(self, batch: Batch) -> None:
        out = _BatchOutcome()
        batch.notes["dla"] = out
        ids = [t.key[len(GRACE_TIMER):] for t in batch.timers if t.key.startswith(GRACE_TIMER)]
        now = self._clock()
        expired: list[ChainRow] = []
        for row in (await _store.lock_chains(batch.conn, batch.platform_run_id, ids)).values():
            if row.chain.status != "PENDING":
                continue
            reasons = row.chain.missing()
            chain = msgspec.structs.replace(row.chain, status="UNRESOLVED")
            self._emit_audit(batch, out, chain, reasons, row.pins)
            expired.append(row._replace(chain=chain, reasons=reasons, unresolved_at=now))
            out.counters["lineage_unresolved_total"] += 1
            out.unresolved.append((chain.decision_id, reasons, now))
        await _store.write_batch(batch.conn, batch.platform_run_id, [], expired, out.counters)

    async def after_lane_commit(self, batch: Batch) -> None:
        out: _BatchOutcome | None = batch.notes.get("dla")
        if out is None:
            return
        now = self._clock()
        for name, delta in out.counters.items():
            self.counters[name] += delta
        for decision_id in out.late:
            self.unresolved.pop(decision_id, None)
        for decision_id, reasons, since in out.unresolved:
            if len(self.unresolved) < self.config.unresolved_list_cap:
                self.unresolved[decision_id] = (reasons, since)
        self.recent_segments.extend(out.segments)
        for audit in out.audits:
            if audit.status == "RESOLVED":
                self.admit_to_audit.observe(max(0.0, (now - _epoch(audit.admitted_at_utc)) * 1000.0))
        self._dirty = self._dirty or any(out.counters.values())

    # ------------------------------------------------------------------ health, metrics, reconciliation

    @property
    def lineage_unresolved_total(self) -> int:
        return self.counters["lineage_unresolved_total"]

    def _pending(self) -> int:
        c = self.counters
        return c["chains_total"] - c["chains_resolved_total"] - c["lineage_unresolved_total"]

    def health(self) -> tuple[str, list[str]]:
        t = self.config.health
        c = self.counters
        found = Findings()
        found.ladder(self.lineage_unresolved_total, t.unresolved_amber, t.unresolved_red,
                     f"LINEAGE_UNRESOLVED: {self.lineage_unresolved_total} chains incomplete after "
                     f"{self.config.grace_seconds:g}s")
        found.ladder(c["rejected_total"], t.rejected_amber, t.rejected_red,
                     f"DEAD_LETTERS: {c['rejected_total']} records rejected")
        anomalies = c["mismatches_total"] + c["conflicts_total"]
        if anomalies >= t.anomalies_amber:
            found.flag("AMBER", f"AUDIT_ANOMALIES: {c['mismatches_total']} changed copies, "
                                f"{c['conflicts_total']} conflicting links")
        failures = self.segments.consecutive_failures if self.segments is not None else 0
        found.ladder(failures, t.segment_failures_amber, t.segment_failures_red,
                     f"SEGMENT_WRITES_FAILING: {failures} in a row")
        found.ladder(self.failed_batches, t.failed_batches_amber, t.failed_batches_red,
                     f"BATCH_FAILURES: {self.failed_batches} failed in a row")
        return found.verdict()

    def health_details(self) -> dict[str, Any]:
        c = self.counters
        return {"lineage_unresolved_total": self.lineage_unresolved_total, "chains_total": c["chains_total"],
                "chains_resolved_total": c["chains_resolved_total"], "chains_in_flight": self._pending(),
                "late_resolved_total": c["late_resolved_total"], "grace_seconds": self.config.grace_seconds}

    def metrics(self) -> dict[str, Any]:
        return {**self.counters, "chains_in_flight": self._pending(),
                "segment_put_failures_total": self.segments.put_failures if self.segments is not None else 0}

    def latency_histograms(self) -> dict[str, LatencyHistogram]:
        return {"admit_to_audit": self.admit_to_audit}

    def reconciliation(self) -> dict[str, Any]:
        """The run's reconciliation, from the in-memory counters (no query): counts by type, action and
        status, chain verdicts, the unresolved chains (capped, oldest first) and where the evidence is."""
        c = self.counters
        cap = self.config.unresolved_list_cap
        unresolved = sorted(self.unresolved.items(), key=lambda kv: kv[1][1])[:cap]
        return {
            "platform_run_id": self._run, "generated_at_utc": utc_now_ts(),
            "records": {t: c[f"records.{t}"] for t in (DECISION_RESPONSE, ACTION_INTENT, ACTION_OUTCOME)},
            "decisions_by_action": {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("decisions.")},
            "outcomes_by_status": {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("outcomes.")},
            "chains": {"total": c["chains_total"], "resolved": c["chains_resolved_total"],
                       "unresolved": c["lineage_unresolved_total"], "in_flight": self._pending(),
                       "late_resolved": c["late_resolved_total"]},
            "lineage_unresolved_total": c["lineage_unresolved_total"],
            "unresolved": [{"decision_id": d, "reasons": reasons, "unresolved_at_epoch": round(at, 3)}
                           for d, (reasons, at) in unresolved],
            "unresolved_listed_cap": cap,
            "intake": {k: c[k] for k in ("duplicates_total", "mismatches_total", "conflicts_total", "rejected_total",
                                         "passed_over_total")},
            "audit_records_total": c["audit_records_total"],
            "evidence_refs": {
                "segments_prefix": f"s3://{self._bucket}/{self._run}/decision_log_audit/segments/",
                "segments_total": c["segments_total"], "segment_bytes_total": c["segment_bytes_total"],
                "recent_segments": [f"s3://{self._bucket}/{k}" for k in self.recent_segments],
                "audit_stream": self._audit_stream,
                "index_tables": ["dla_links", "dla_chains", "dla_anomalies", "dla_run_counters"]},
        }

    def write_reconciliation(self) -> None:
        if self._reconciliation_path is None:
            return
        self._dirty = False
        write_json_atomic(self._reconciliation_path, self.reconciliation())
