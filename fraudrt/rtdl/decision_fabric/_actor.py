"""The Decision Fabric actor: every AUTH_REQUEST of the run decided exactly once.

Per batch (one transaction with the checkpoint, `handle`):

1. decode the traffic records (truth-free struct); AUTH_RESPONSEs are counted, undecodable records
   and other event types dead-lettered with the reason;
2. one statement finds which requests are already decided or pending (a bus duplicate is a no-op; a
   changed copy of a known event is dead-lettered as a mismatch, never decided again);
3. the posture (one read of the ladder's state) says which feature groups and whether a model may
   be used; only the sources of those groups are read, one statement per source for the batch;
4. flows whose context is incomplete wait briefly in the batch, woken by the needed projectors'
   commits (`_context.settle`), then durably: a `df_pending` row, a deadline timer per flow and one
   re-check timer while anything waits;
5. the complete ones are decided by the policy (`fraudrt.rtdl.policy.decide`), recorded in
   `df_decisions` and emitted (decision + intent) through the outbox.

Timers (`on_timer`, a transaction of their own): the re-check decides the waiting flows whose context
has arrived; a flow's deadline decides it as CONTEXT_MISSING under the posture's safe default (raised
by any rule its available inputs fire). The decision row, the pending row's deletion, the timers and
the outbox rows commit together, so a crash never loses a waiting request and never decides one
twice; a replayed record finds its decision row and emits nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import (
    POSTURE_MODES,
    BundleRef,
    Contribution,
    DecisionPayload,
    DecisionTimings,
    FeatureBasis,
    PostureRef,
    SourceEvent,
    decision_id,
    df_decision_content_digest,
    df_feature_snapshot_digest,
    format_ts_utc,
    recipe_hash,
)
from fraudrt.rtdl._inputs import AUTH_REQUEST, TRAFFIC_EVENT_TYPES, event_type_of, traffic_stream
from fraudrt.rtdl.degrade_ladder import NOTIFY_CHANNEL as POSTURE_CHANNEL
from fraudrt.rtdl.degrade_ladder import Posture, current_posture
from fraudrt.rtdl.identity_entity_graph import DEFINITION_DIGEST as IEG_DEFINITION_DIGEST
from fraudrt.rtdl.online_feature_plane import load_definitions
from fraudrt.rtdl.policy import (
    BundleError,
    DecisionPolicy,
    LoadedBundle,
    OnlineFlow,
    OnlineInputs,
    PolicyBundle,
    Verdict,
    decide,
    load_bundle,
    load_policy,
    needed_inputs,
)
from fraudrt.runtime import Actor, Batch, ComponentContext, InboundRecord, LatencyHistogram, content_hash

from . import _store
from ._context import GROUP_SOURCE, BatchContext, FlowContext, read_sources, settle, sources_for
from ._health import DecisionWindow, Thresholds, evaluate
from ._payloads import TrafficRecord, decision_envelopes, traffic_record_decoder

RECHECK_KEY: Final = "recheck"
DEADLINE_PREFIX: Final = "deadline:"
_NO_BUNDLE: Final = BundleRef(bundle_id="none", version="0", digest="0" * 64)
_EMPTY: Final = PolicyBundle(bundle_id="none", version="0", feature_definitions={})


@dataclass(frozen=True, slots=True)
class _Request:
    """One AUTH_REQUEST to decide: the record, its decoded event, its decision id, when DF first saw it."""

    record: InboundRecord
    event: TrafficRecord
    decision_id: str
    source_hash: str
    first_seen: float

    @property
    def flow_id(self) -> int:
        return self.event.payload.flow_id


@dataclass(frozen=True, slots=True)
class _PostureView:
    mode: str
    ref: PostureRef
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """How this posture decides: the bundle, the groups it may read, model or not, a forced action."""

    bundle: LoadedBundle | None
    groups: tuple[str, ...]
    use_model: bool
    forced_action: str | None
    safe_default: str
    sources: tuple[str, ...]
    reasons: tuple[str, ...] = ()

    @property
    def bundle_ref(self) -> BundleRef:
        if self.bundle is None:
            return _NO_BUNDLE
        b = self.bundle.bundle
        return BundleRef(bundle_id=b.bundle_id, version=b.version, digest=self.bundle.digest)


@dataclass(slots=True)
class _Decided:
    decision_id: str
    action: str
    context_status: str
    posture: str
    model: str | None
    arrival_ts: float


@dataclass(slots=True)
class _Outcome:
    """What a batch or a timer changed, applied to the in-memory view once it is durable."""

    decided: list[_Decided] = field(default_factory=list)
    pending_added: list[tuple[str, float]] = field(default_factory=list)
    pending_removed: list[str] = field(default_factory=list)
    responses: int = 0
    duplicates: int = 0
    mismatches: int = 0
    rejected: int = 0
    recheck_set: bool = False
    recheck_fired: bool = False
    inline_waits: int = 0
    newest_arrival: float | None = None


class DecisionFabric(Actor):
    name: ClassVar[str] = "decision_fabric"
    # The ladder's tables too: DF reads the posture even in a pack without the ladder.
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.rtdl.degrade_ladder", "fraudrt.rtdl.decision_fabric")
    max_batch: ClassVar[int] = 2000

    def __init__(self, options: dict[str, Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self._options = dict(options or {})
        self._clock = clock
        self.thresholds = Thresholds()
        self.policy: DecisionPolicy | None = None
        self.model_bundle: LoadedBundle | None = None
        self.rules_bundle: LoadedBundle | None = None
        self.bundle_problems: list[str] = []
        self.inputs: OnlineInputs | None = None
        self.run_config_digest = "0" * 64
        self.rtdl_stream = ""
        self.ctx: ComponentContext | None = None
        self.deadline_s = 10.0
        self.inline_wait_s = 0.25
        self.recheck_s = 0.25
        self.recheck_limit = 5000
        self.posture_max_age_s = 15.0
        self.posture_wait_s = 5.0
        self._posture_waited = False
        # In-memory view (loaded at start, updated after each commit).
        self.counts: dict[str, int] = {}
        self.pending: dict[str, float] = {}  # decision id -> first seen, oldest first
        self.recheck_scheduled = False
        self.latency = LatencyHistogram()
        self.window = DecisionWindow(300.0)
        self.posture_mode: str | None = None
        self.posture_problem: str | None = None
        self.failed_batches = 0
        self.last_commit_at: float | None = None
        self.last_lag_s: float | None = None

    def subscriptions(self, settings: Settings) -> list[str]:
        return [traffic_stream(settings)]

    # ------------------------------------------------------------------ start

    async def start(self, ctx: ComponentContext) -> None:
        opts = {**ctx.options, **self._options}
        self.ctx = ctx
        self.policy = load_policy(opts.get("policy"))
        self.thresholds = Thresholds.from_options(opts)
        self.window = DecisionWindow(self.thresholds.deadline_window_s)
        self.deadline_s = float(opts.get("deadline_seconds", 10.0))
        self.inline_wait_s = float(opts.get("inline_wait_ms", 250.0)) / 1000.0
        self.recheck_s = float(opts.get("recheck_ms", 250.0)) / 1000.0
        self.recheck_limit = int(opts.get("recheck_limit", 5000))
        self.posture_max_age_s = float(opts.get("posture_max_age_seconds", 15.0))
        self.posture_wait_s = float(opts.get("posture_wait_seconds", 5.0))
        definitions = load_definitions()
        self.inputs = OnlineInputs(definitions)
        self.model_bundle, self.rules_bundle, self.bundle_problems = None, None, []
        for which in ("model", "rules_only"):
            path = self.policy.bundle_path(which)  # type: ignore[arg-type]
            try:
                loaded = load_bundle(path)
                defs = loaded.bundle.feature_definitions
                if defs.get("velocity") != definitions.digest or defs.get("graph") != IEG_DEFINITION_DIGEST:
                    raise BundleError(f"{path}: fitted on other feature definitions than the projectors serve")
            except BundleError as exc:
                self.bundle_problems.append(str(exc))
                ctx.logger.error("policy bundle unusable: %s", exc)
                continue
            if which == "model":
                self.model_bundle = loaded
            else:
                self.rules_bundle = loaded
        self.run_config_digest = recipe_hash("df.run_config.v1", {
            "policy": self.policy.digest, "deadline_seconds": self.deadline_s,
            "model_bundle": self.model_bundle.digest if self.model_bundle else None,
            "rules_bundle": self.rules_bundle.digest if self.rules_bundle else None})
        self.rtdl_stream = ctx.settings.streams.name("rtdl")
        self._posture_waited = False
        async with ctx.pool.acquire() as conn:
            self.counts = {}
            recent = [0, 0]
            window = self.thresholds.deadline_window_s
            for action, status, mode, model, n, last in await _store.decision_counts(conn, ctx.platform_run_id,
                                                                                      window):
                self._count(action, status, mode, model or None, n)
                recent[0] += last
                recent[1] += last if status == "CONTEXT_MISSING" else 0
            # The health window survives a restart (its decisions are counted as of now: they age out
            # of it one window after the start rather than at their own times).
            self.window.add(self._clock(), recent[0], recent[1])
            self.pending = dict(await _store.pending_ages(conn, ctx.platform_run_id))
        # A timer left by the previous run of this actor fires anyway; a fresh one is set if needed.
        self.recheck_scheduled = False

    def _count(self, action: str, status: str, mode: str, model: str | None, n: int = 1) -> None:
        for key in ("decisions_total", f"decisions.{action}", f"decisions_context.{status}",
                    f"decisions_posture.{mode}", f"decisions_model.{model or 'none'}"):
            self.counts[key] = self.counts.get(key, 0) + n

    # ------------------------------------------------------------------ intake

    def _intake(self, batch: Batch, out: _Outcome, now: float) -> list[_Request]:
        """The batch's AUTH_REQUESTs (first copy of each in the batch), the rest counted or rejected."""
        requests: dict[str, _Request] = {}
        for r in batch.records:
            try:
                ev = traffic_record_decoder.decode(r.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                kind = event_type_of(r.data)
                if kind is not None and kind not in TRAFFIC_EVENT_TYPES:
                    self._reject(batch, out, r, f"UNEXPECTED_EVENT_TYPE: {kind!r} on {r.stream}")
                else:
                    self._reject(batch, out, r, f"INVALID_TRAFFIC_EVENT: {exc}")
                continue
            if ev.event_type not in TRAFFIC_EVENT_TYPES:
                self._reject(batch, out, r, f"UNEXPECTED_EVENT_TYPE: {ev.event_type!r} on {r.stream}")
                continue
            if ev.payload.event_type != AUTH_REQUEST:
                out.responses += 1
                continue
            if ev.manifest_fingerprint is None:
                self._reject(batch, out, r, "PINS_MISSING: a traffic event without manifest_fingerprint")
                continue
            req = _Request(r, ev, decision_id(batch.platform_run_id, ev.event_id), content_hash(r), now)
            held = requests.get(req.decision_id)
            if held is None:
                requests[req.decision_id] = req
            else:
                self._copy(batch, out, r, held.source_hash, req.source_hash)
        return list(requests.values())

    def _reject(self, batch: Batch, out: _Outcome, record: InboundRecord, reason: str) -> None:
        batch.dead_letter(record, reason[:2000])
        out.rejected += 1

    def _copy(self, batch: Batch, out: _Outcome, record: InboundRecord, held: str, seen: str) -> None:
        """Another copy of a request already taken in: a duplicate, or a changed copy (rejected)."""
        if held == seen:
            out.duplicates += 1
            return
        out.mismatches += 1
        self._reject(batch, out, record, f"PAYLOAD_MISMATCH: event {record.event_id} was taken in with content "
                                         f"hash {held}; this copy has {seen}")

    # ------------------------------------------------------------------ posture and plan

    async def _posture(self, conn: Any, platform_run_id: str) -> _PostureView:
        view = await self._read_posture(conn, platform_run_id)
        # What health reports: the posture the last decisions were made under.
        self.posture_mode, self.posture_problem = view.mode, view.problem
        return view

    async def _read_posture(self, conn: Any, platform_run_id: str) -> _PostureView:
        posture = await current_posture(conn, platform_run_id)
        if posture is None and not self._posture_waited and self.posture_wait_s > 0 and self.ctx is not None:
            # The ladder and DF start together: give its first tick a moment, once per start.
            self._posture_waited = True
            holder: list[Posture | None] = [None]

            async def arrived() -> bool:
                holder[0] = await current_posture(conn, platform_run_id)
                return holder[0] is not None

            await self.ctx.fence().notifications.wait(POSTURE_CHANNEL, platform_run_id, arrived, self.posture_wait_s)
            posture = holder[0]
        if posture is None:
            return _PostureView("FAIL_CLOSED", PostureRef(mode="FAIL_CLOSED", posture_seq=0),
                                "POSTURE_MISSING: the degrade ladder has written no posture for this run")
        ref = PostureRef(mode=posture.mode, posture_seq=posture.posture_seq,  # type: ignore[arg-type]
                         decided_at_utc=posture.decided_at_utc, policy_digest=posture.policy_digest)
        age = posture.heartbeat_age_s
        if age is None or age > self.posture_max_age_s:
            seen = "never" if age is None else f"{age:.0f}s ago"
            return _PostureView("FAIL_CLOSED", msgspec.structs.replace(ref, mode="FAIL_CLOSED"),
                                f"POSTURE_STALE: the degrade ladder last ticked {seen} (limit "
                                f"{self.posture_max_age_s:.0f}s); its {posture.mode} is not trusted")
        if posture.mode not in POSTURE_MODES:
            return _PostureView("FAIL_CLOSED", msgspec.structs.replace(ref, mode="FAIL_CLOSED"),
                                f"POSTURE_UNKNOWN: {posture.mode!r}")
        return _PostureView(posture.mode, ref)

    def _plan(self, mode: str) -> _Plan:
        assert self.policy is not None
        caps = self.policy.capabilities(mode)
        if caps.forced_action is not None:
            return _Plan(self.rules_bundle or self.model_bundle, (), False, caps.forced_action,
                         caps.context_missing_action, ())
        groups = tuple(caps.groups)
        reasons: tuple[str, ...] = ()
        if caps.model and self.model_bundle is not None:
            bundle, use_model = self.model_bundle, True
        elif self.rules_bundle is not None:
            bundle, use_model = self.rules_bundle, False
            reasons = ("BUNDLE_UNAVAILABLE:model",) if caps.model else ()
        elif self.model_bundle is not None:
            bundle, use_model, reasons = self.model_bundle, False, ("BUNDLE_UNAVAILABLE:rules_only",)
        else:
            return _Plan(None, (), False, "REVIEW", "REVIEW", (), ("BUNDLE_UNAVAILABLE:all",))
        return _Plan(bundle, groups, use_model, None, caps.context_missing_action, sources_for(groups), reasons)

    # ------------------------------------------------------------------ deciding

    def _decide(self, batch: Batch, requests: Sequence[_Request], bc: BatchContext, plan: _Plan,
                posture: _PostureView, out: _Outcome, *, context_missing: bool) -> list[_store.DecisionRow]:
        """Decide `requests` (all complete for the plan's sources, or all at their deadline)."""
        if not requests:
            return []
        # Flows decided at their deadline may each have a different part of their context.
        by_groups: dict[tuple[str, ...], list[_Request]] = {}
        for req in requests:
            ctx = bc.contexts.get(req.flow_id, FlowContext())
            if context_missing:
                have = {s for s in plan.sources if ctx.complete(s)}
                groups = tuple(g for g in plan.groups if g == "request" or GROUP_SOURCE[g] in have)
            else:
                groups = plan.groups
            by_groups.setdefault(groups, []).append(req)
        rows = []
        now = self._clock()
        for groups, reqs in by_groups.items():
            names = needed_inputs(plan.bundle.bundle, groups, plan.use_model) if plan.bundle else []
            assert self.inputs is not None
            flows = [self._online(req, bc, groups) for req in reqs]
            cols = self.inputs.columns(names, flows)
            if plan.forced_action is not None:
                verdicts = decide(plan.bundle.bundle if plan.bundle else _EMPTY, cols, groups=(), use_model=False,
                                  forced_action=plan.forced_action)
            else:
                assert plan.bundle is not None
                floor = plan.safe_default if context_missing else "APPROVE"
                verdicts = decide(plan.bundle.bundle, cols, groups=groups, use_model=plan.use_model and not
                                  context_missing, floor_action=floor)
            for i, (req, verdict) in enumerate(zip(reqs, verdicts, strict=True)):
                snapshot = {n: float(cols[n][i]) for n in names}
                rows.append(self._emit(batch, req, verdict, bc, plan, posture, groups, snapshot, now,
                                       context_missing, out))
        return rows

    def _online(self, req: _Request, bc: BatchContext, groups: Sequence[str]) -> OnlineFlow:
        ctx = bc.contexts.get(req.flow_id, FlowContext())
        return OnlineFlow(amount=req.event.payload.amount,
                          binding=ctx.binding if "binding" in groups else None,
                          features=ctx.features if "velocity" in groups else None,
                          graph=ctx.graph if "graph" in groups else None)

    def _emit(self, batch: Batch, req: _Request, verdict: Verdict, bc: BatchContext, plan: _Plan,
              posture: _PostureView, groups: Sequence[str], snapshot: dict[str, float], now: float,
              context_missing: bool, out: _Outcome) -> _store.DecisionRow:
        ev, rec = req.event, req.record
        ctx = bc.contexts.get(req.flow_id, FlowContext())
        features = ctx.features if "velocity" in groups else None
        graph = ctx.graph if "graph" in groups else None
        missing = ctx.missing(plan.sources) if context_missing else []
        reasons = list(verdict.reason_codes)
        if posture.problem is not None:
            reasons.append(posture.problem.split(":", 1)[0])
        if posture.mode != "NORMAL":
            reasons.append(f"POSTURE:{posture.mode}")
        reasons.extend(plan.reasons)
        if context_missing:
            reasons.append("CONTEXT_MISSING")
            reasons.extend(f"MISSING:{m}" for m in missing)
        decision = DecisionPayload(
            decision_id=req.decision_id,
            source_event=SourceEvent(event_id=ev.event_id, event_type=ev.event_type, ts_utc=ev.ts_utc,
                                     stream=rec.stream, shard_id=rec.shard_id, sequence_number=rec.sequence_number),
            flow_id=req.flow_id, action=verdict.action, score=verdict.score,  # type: ignore[arg-type]
            reason_codes=reasons, rules_fired=list(verdict.rules_fired),
            top_features=[Contribution(name=n, value=v, contribution=c) for n, v, c in verdict.top_features],
            bundle=plan.bundle_ref,
            features=FeatureBasis(
                definitions_digest=features.definitions_digest if features is not None else None,
                snapshot_digest=df_feature_snapshot_digest(snapshot) if snapshot else None,
                ofp_watermark_utc=bc.ofp_watermark if features is not None else None,
                graph_version=graph.graph_version if graph is not None else None),
            posture=posture.ref,
            context_status="CONTEXT_MISSING" if context_missing else "COMPLETE",
            missing_context=missing,
            timings=DecisionTimings(admitted_at_utc=_ts(rec.arrival_ts), decided_at_utc=_ts(now),
                                    admit_to_decision_ms=round(max(0.0, now - rec.arrival_ts) * 1000.0, 3),
                                    waited_ms=round(max(0.0, now - req.first_seen) * 1000.0, 3)),
            run_config_digest=self.run_config_digest)
        doc = msgspec.to_builtins(decision)
        event_id, data, intent_id, intent = decision_envelopes(ev, decision, doc)
        batch.emit(self.rtdl_stream, data, partition_key=req.decision_id, event_id=event_id)
        batch.emit(self.rtdl_stream, intent, partition_key=req.decision_id, event_id=intent_id)
        out.decided.append(_Decided(req.decision_id, verdict.action, decision.context_status, posture.mode,
                                    verdict.model, rec.arrival_ts))
        return _store.DecisionRow(
            req.decision_id, ev.event_id, req.flow_id, verdict.action, verdict.score, decision.context_status,
            posture.mode, verdict.model, plan.bundle_ref.digest,
            df_decision_content_digest(doc), req.source_hash, rec.arrival_ts, now,
            decision.timings.waited_ms)

    async def _record(self, batch: Batch, rows: list[_store.DecisionRow], out: _Outcome) -> None:
        """Insert the decision rows; a row that was already there (cannot happen after `known`, but a
        second DF on the run could race) keeps its emits out of the outbox."""
        inserted = await _store.insert_decisions(batch.conn, batch.platform_run_id, rows)
        if len(inserted) == len(rows):
            return
        raise RuntimeError(f"{len(rows) - len(inserted)} decisions were already recorded by another writer; "
                           "the batch is rolled back and retried")

    # ------------------------------------------------------------------ the batch

    async def handle(self, batch: Batch) -> None:
        try:
            await self._handle(batch)
        except BaseException:
            self.failed_batches += 1
            raise

    async def _handle(self, batch: Batch) -> None:
        now = self._clock()
        out = _Outcome(newest_arrival=max((r.arrival_ts for r in batch.records), default=None))
        batch.notes["df"] = out
        requests = self._intake(batch, out, now)
        if not requests:
            return
        known = await _store.known(batch.conn, batch.platform_run_id, [r.decision_id for r in requests])
        fresh = []
        for req in requests:
            k = known.get(req.decision_id)
            if k is None:
                fresh.append(req)
            else:
                self._copy(batch, out, req.record, k.decided_hash or k.pending_hash or "", req.source_hash)
        if not fresh:
            return
        posture = await self._posture(batch.conn, batch.platform_run_id)
        plan = self._plan(posture.mode)
        notifications = self.ctx.fence().notifications if self.ctx is not None else None
        bc = await settle(batch.conn, batch.platform_run_id, [r.flow_id for r in fresh], plan.sources,
                          notifications=notifications, budget_s=self.inline_wait_s)
        out.inline_waits += int(bc.waited_s > 0)
        waiting = set(bc.incomplete([r.flow_id for r in fresh], plan.sources))
        ready = [r for r in fresh if r.flow_id not in waiting]
        later = [r for r in fresh if r.flow_id in waiting]
        await self._record(batch, self._decide(batch, ready, bc, plan, posture, out, context_missing=False), out)
        if later:
            await self._pend(batch, later, out)

    async def _pend(self, batch: Batch, requests: Sequence[_Request], out: _Outcome) -> None:
        rows = []
        for req in requests:
            r = req.record
            deadline = req.first_seen + self.deadline_s
            rows.append(_store.PendingRow(req.decision_id, req.flow_id, req.source_hash, r.stream, r.shard_id,
                                          r.sequence_number, r.arrival_ts, req.first_seen, deadline, r.data))
            batch.set_timer(f"{DEADLINE_PREFIX}{req.decision_id}", deadline)
            out.pending_added.append((req.decision_id, req.first_seen))
        await _store.insert_pending(batch.conn, batch.platform_run_id, rows)
        if not self.recheck_scheduled:
            # Never pushed later while scheduled: a steady stream of new waiters must not starve it.
            batch.set_timer(RECHECK_KEY, self._clock() + self.recheck_s)
            out.recheck_set = True

    # ------------------------------------------------------------------ timers

    async def on_timer(self, batch: Batch) -> None:
        out = _Outcome()
        batch.notes["df"] = out
        due = {t.key.removeprefix(DEADLINE_PREFIX) for t in batch.timers if t.key.startswith(DEADLINE_PREFIX)}
        recheck = any(t.key == RECHECK_KEY for t in batch.timers)
        out.recheck_fired = recheck
        run = batch.platform_run_id
        rows = await _store.pending_by_id(batch.conn, run, sorted(due))
        more = False
        if recheck:
            oldest = await _store.oldest_pending(batch.conn, run, self.recheck_limit)
            more = len(oldest) >= self.recheck_limit
            seen = {r.decision_id for r in rows}
            rows += [r for r in oldest if r.decision_id not in seen]
        if not rows:
            return
        now = self._clock()
        requests = []
        for row in rows:
            event = traffic_record_decoder.decode(row.data)
            record = InboundRecord(row.stream, row.shard_id, row.sequence_number, row.decision_id, row.data,
                                   row.arrival_ts, run, event.event_id, event.ts_utc)
            requests.append(_Request(record, event, row.decision_id, row.source_hash, row.first_seen))
        posture = await self._posture(batch.conn, run)
        plan = self._plan(posture.mode)
        bc = BatchContext()
        await read_sources(batch.conn, run, [r.flow_id for r in requests], plan.sources, bc)
        waiting = set(bc.incomplete([r.flow_id for r in requests], plan.sources))
        deadline_of = {row.decision_id: row.deadline_at for row in rows}
        ready = [r for r in requests if r.flow_id not in waiting]
        expired = [r for r in requests if r.flow_id in waiting
                   and (r.decision_id in due or deadline_of[r.decision_id] <= now)]
        decided = self._decide(batch, ready, bc, plan, posture, out, context_missing=False)
        decided += self._decide(batch, expired, bc, plan, posture, out, context_missing=True)
        await self._record(batch, decided, out)
        done = [r.decision_id for r in decided]
        await _store.delete_pending(batch.conn, run, done)
        for decision in done:
            if decision not in due:
                batch.cancel_timer(f"{DEADLINE_PREFIX}{decision}")
        out.pending_removed = done
        if more or len(done) < len(requests):
            batch.set_timer(RECHECK_KEY, now + self.recheck_s)
            out.recheck_set = True

    # ------------------------------------------------------------------ after commit

    async def after_commit(self, batch: Batch) -> None:
        now = self._clock()
        self.last_commit_at = now
        out: _Outcome | None = batch.notes.get("df")
        if batch.records:
            self.failed_batches = 0
        if out is None:
            return
        for d in out.decided:
            self._count(d.action, d.context_status, d.posture, d.model)
            self.latency.observe(max(0.0, now - d.arrival_ts) * 1000.0)
        self.window.add(now, len(out.decided), sum(d.context_status == "CONTEXT_MISSING" for d in out.decided))
        for key, n in (("auth_responses_total", out.responses), ("duplicates_total", out.duplicates),
                       ("payload_mismatches_total", out.mismatches), ("dead_letters_total", out.rejected),
                       ("inline_waits_total", out.inline_waits)):
            if n:
                self.counts[key] = self.counts.get(key, 0) + n
        for decision, first_seen in out.pending_added:
            self.pending[decision] = first_seen
        for decision in out.pending_removed:
            self.pending.pop(decision, None)
        if out.pending_added:
            self.counts["waited_total"] = self.counts.get("waited_total", 0) + len(out.pending_added)
        if out.recheck_fired:
            self.recheck_scheduled = False
        if out.recheck_set:
            self.recheck_scheduled = True
        if out.newest_arrival is not None:
            self.last_lag_s = max(0.0, now - out.newest_arrival)

    # ------------------------------------------------------------------ health and metrics

    def health(self) -> tuple[str, list[str]]:
        now = self._clock()
        return evaluate(self.thresholds, now=now, oldest_pending_at=next(iter(self.pending.values()), None),
                        pending=len(self.pending), window=self.window.totals(now), posture=self.posture_mode,
                        posture_problem=self.posture_problem, last_commit_at=self.last_commit_at,
                        last_lag_s=self.last_lag_s, rejected=self.counts.get("dead_letters_total", 0),
                        mismatches=self.counts.get("payload_mismatches_total", 0),
                        failed_batches=self.failed_batches, bundle_problems=self.bundle_problems)

    def metrics(self) -> dict[str, Any]:
        now = self._clock()
        oldest = next(iter(self.pending.values()), None)
        out: dict[str, Any] = dict(self.counts)
        out.update({
            "pending": len(self.pending),
            "pending_oldest_age_s": round(now - oldest, 3) if oldest is not None else 0.0,
            "posture": self.posture_mode,
            "model_bundle": self.model_bundle.digest if self.model_bundle else None,
            "rules_bundle": self.rules_bundle.digest if self.rules_bundle else None,
        })
        return out

    def latency_histograms(self) -> dict[str, LatencyHistogram]:
        # Exported by the pack as the gauges latency_ms.admit_to_decision.{count,p50,p95,p99,max,mean}.
        return {"admit_to_decision": self.latency}

    def health_details(self) -> dict[str, Any]:
        return {"posture": self.posture_mode, "posture_problem": self.posture_problem,
                "pending": len(self.pending), "run_config_digest": self.run_config_digest,
                "bundles": {"model": self.model_bundle.digest if self.model_bundle else None,
                            "rules_only": self.rules_bundle.digest if self.rules_bundle else None},
                "latency_ms.admit_to_decision": self.latency.summary(),
                "thresholds": msgspec.to_builtins(self.thresholds)}


def _ts(epoch: float) -> str:
    return format_ts_utc(_store.epoch_to_dt(epoch))
