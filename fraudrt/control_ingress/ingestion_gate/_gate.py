"""The admission pipeline for one batch, independent of HTTP.

  evaluate (pure) -> claim in Postgres (one statement, PUBLISH_PENDING + envelope) -> PutRecords
  -> receipt objects -> settle (one transaction: ADMITTED + eb_ref, receipts index, quarantines)

Admission is durable before anything is published (DESIGN §2). A crash after the claim leaves a
PUBLISH_PENDING row holding the envelope; whoever next holds the claim (a retry of the same push,
or the heal, at once if the claimant's process is dead, else once the claim's lease has expired)
re-publishes it, writes the receipt with the new eb_ref and commits, so no admission stays
ambiguous. The bus may carry a duplicate, never a gap.

Who may take a claim over: never a live request. Within this process every request and heal
registers its claim token in `_live_tokens` before its first statement, and takes over only a row
whose token is not live here and whose claimant is this process (a failed request of ours) or
past the lease; the take-over is a compare-and-swap on the token it saw. Across processes, the
store knows a dead claimant by its released instance lock (`InstanceLock`).

The receipt object and the row agree: the settle writes the objects while its transaction holds the
rows it committed (`AdmissionStore.settle`), and only for the admissions it committed.

Concurrent pushes of one event: within this process the first request registers a future and the
others wait on it (no database contention); across processes `INSERT ... ON CONFLICT DO NOTHING`
elects one claimant and the others poll its row briefly, then answer 503 (Retry-After).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import operator
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec

from fraudrt.contracts import Envelope, envelope_to_dict, ig_receipt_id, utc_now_ts

from ._admission import PAYLOAD_HASH_MISMATCH, Admissible, Rejected, evaluate, quarantine_ids
from ._errors import StillInFlight
from ._evidence import ObjectWriter, batch_key, quarantine_key, receipt_key
from ._policy import Policy
from ._publish import Publisher, PublishItem
from ._records import (
    Actor,
    Decision,
    EbRef,
    EvidenceRef,
    PayloadHash,
    PolicyRevRef,
    Provenance,
    QuarantineRecord,
    Receipt,
    ReceiptBatch,
)
from ._store import (
    AdmissionStore,
    AdmitCommit,
    ClaimRow,
    ExistingRow,
    QuarantineIndexRow,
    ReceiptIndexRow,
    SettleIndex,
)

log = logging.getLogger("fraudrt.ingestion_gate")

# Test hook (never set in production): crash the process right after PutRecords succeeded and
# before receipts/commit, to prove the heal path. Values: "exit" (os._exit) or "raise".
CRASH_HOOK_ENV: Final = "FRAUDRT_IG_TEST_CRASH_AFTER_PUBLISH"
_PIN_KEYS: Final = ("manifest_fingerprint", "platform_run_id", "scenario_run_id", "parameter_hash", "seed",
                    "scenario_id", "run_id")


@dataclass(frozen=True, slots=True)
class GateConfig:
    bucket: str
    fallback_run: str
    instance_id: str
    environment: str
    service_release_id: str
    receipts_layout: Literal["per_event", "batch"] = "per_event"
    # A PUBLISH_PENDING claim older than this is taken over even if its claimant's process lives
    # (a request stuck past every budget). It must exceed the longest a live request holds a claim
    # (publish budget + S3 + Postgres timeouts); a dead process's claims are taken at once.
    heal_lease_seconds: float = 60.0
    # How long a push waits for another request that holds the same event's claim, before 503.
    in_flight_wait_seconds: float = 2.0
    crash_hook: str | None = None


class Outcome(msgspec.Struct, frozen=True):
    index: int
    decision: Decision
    receipt: Receipt
    receipt_ref: str
    event_id: str | None
    reason_codes: tuple[str, ...] = ()
    eb_ref: EbRef | None = None


@dataclass(slots=True)
class GateCounters:
    admit_total: int = 0
    duplicate_total: int = 0
    quarantine_total: int = 0
    healed_total: int = 0
    batches_total: int = 0
    in_flight_503_total: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


class _Claimed(msgspec.Struct, frozen=True):
    """An admission whose claim this instance holds: everything needed to publish and receipt it."""

    index: int
    env: Envelope
    data: bytes
    dedupe_key: str
    claim_token: str
    platform_run_id: str
    event_class: str
    stream: str
    partition_key: str
    profile_id: str
    payload_hash: str
    receipt_id: str  # of its ADMIT receipt


@dataclass(slots=True)
class _Evidence:
    """What one settle round writes: objects, then index rows in one transaction."""

    outcomes: list[Outcome] = field(default_factory=list)
    admits: list[tuple[_Claimed, EbRef]] = field(default_factory=list)
    receipts: list[tuple[Receipt, int]] = field(default_factory=list)  # (receipt, outcome index)
    quarantines: list[tuple[QuarantineRecord, Rejected]] = field(default_factory=list)
    duplicate_keys: dict[str, str] = field(default_factory=dict)  # receipt_id -> dedupe_key (write back ref)
    reused_refs: dict[str, str] = field(default_factory=dict)  # receipt_id -> existing ref (no rewrite)
    # Heal only: pending rows no longer admissible, quarantined and deleted if still ours.
    drops: dict[str, tuple[str, str]] = field(default_factory=dict)  # quarantine receipt_id -> (key, token)


@dataclass(slots=True)
class _Objects:
    """The evidence objects of one settle and where each receipt lands."""

    objects: list[tuple[str, object]]
    refs: dict[str, str]  # receipt_id -> receipt_ref
    batch_ids: dict[str, str]  # receipt_id -> batch_id (batch layout)


def _claimed_from(a: Admissible, token: str) -> _Claimed:
    return _Claimed(index=a.index, env=a.env, data=a.data, dedupe_key=a.dedupe_key, claim_token=token,
                    platform_run_id=a.platform_run_id, event_class=a.rule.event_class, stream=a.rule.route.stream,
                    partition_key=a.partition_key, profile_id=a.rule.route.profile_id, payload_hash=a.payload_hash,
                    receipt_id=ig_receipt_id("ADMIT", a.env.event_id))


_pin_values: Final = operator.attrgetter(*_PIN_KEYS)


def _pins(env: Envelope, cache: dict[tuple[object, ...], dict[str, object]]) -> dict[str, object]:
    # The events of a run share their pins: build the dict once per distinct set (the cache is
    # bounded; a run has one set). Receipts only read (encode) it, so sharing one dict is safe.
    values = _pin_values(env)
    pins = cache.get(values)
    if pins is None:
        if len(cache) >= 256:
            cache.clear()
        pins = cache[values] = {k: v for k, v in zip(_PIN_KEYS, values, strict=True) if v is not None}
    return pins


class Gate:
    def __init__(self, policy: Policy, store: AdmissionStore, publisher: Publisher, writer: ObjectWriter,
                 config: GateConfig) -> None:
        self.policy = policy
        self.store = store
        self.publisher = publisher
        self.writer = writer
        self.config = config
        self.counters = GateCounters()
        self._inflight: dict[str, asyncio.Future[EbRef | None]] = {}
        # Claim tokens of this process's live requests and heals: never taken over (see the docstring).
        self._live_tokens: set[str] = set()
        self._pins_cache: dict[tuple[object, ...], dict[str, object]] = {}
        rev = policy.rev
        self._policy_rev = PolicyRevRef(policy_id=rev.policy_id, revision=rev.revision,
                                        content_digest=rev.content_digest)
        self._provenance = Provenance(service_release_id=config.service_release_id, environment=config.environment,
                                      config_revision=rev.revision, run_config_digest=rev.content_digest)

    # ------------------------------------------------------------------ receipts

    def _receipt(self, decision: Decision, receipt_id: str, env: Envelope, event_class: str, dedupe_key: str,
                 payload_hash: str, eb_ref: EbRef, actor: Actor | None, *, profile_id: str | None = None,
                 partition_key: str | None = None, evidence: list[EvidenceRef] | None = None,
                 reasons: list[str] | None = None) -> Receipt:
        return Receipt(
            receipt_id=receipt_id, decision=decision, event_id=env.event_id, event_type=env.event_type,
            event_class=event_class, ts_utc=env.ts_utc, manifest_fingerprint=env.manifest_fingerprint,
            platform_run_id=env.platform_run_id or self.config.fallback_run,
            run_config_digest=self._policy_rev.content_digest, policy_rev=self._policy_rev, dedupe_key=dedupe_key,
            pins=_pins(env, self._pins_cache), scenario_run_id=env.scenario_run_id,
            payload_hash=PayloadHash(algo="sha256", hex=payload_hash),
            admitted_at_utc=eb_ref.published_at_utc, eb_ref=eb_ref, partitioning_profile_id=profile_id,
            partition_key=partition_key, evidence_refs=evidence or [], reason_codes=reasons or [],
            schema_version=env.schema_version, producer=env.producer, actor=actor,
            service_release_id=self.config.service_release_id, environment=self.config.environment,
            provenance=self._provenance,
        )

    def _admit_outcome(self, c: _Claimed, ref: EbRef, actor: Actor | None) -> Outcome:
        receipt = self._receipt("ADMIT", c.receipt_id, c.env, c.event_class, c.dedupe_key,
                                c.payload_hash, ref, actor, profile_id=c.profile_id, partition_key=c.partition_key)
        return Outcome(c.index, "ADMIT", receipt, "", c.env.event_id, (), ref)

    def _duplicate_outcome(self, a: Admissible, row: ExistingRow, actor: Actor | None) -> Outcome:
        assert row.eb_topic is not None and row.eb_partition is not None and row.eb_offset is not None
        ref = EbRef(topic=row.eb_topic, partition=row.eb_partition, offset=row.eb_offset,
                    offset_kind="kinesis_sequence", published_at_utc=row.eb_published_at_utc)
        evidence = [EvidenceRef(kind="receipt_ref", ref=row.receipt_ref)] if row.receipt_ref else []
        # No wall-clock field: the DUPLICATE receipt of an event is the same bytes whoever writes it.
        receipt = self._receipt("DUPLICATE", ig_receipt_id("DUPLICATE", a.env.event_id), a.env, a.rule.event_class,
                                a.dedupe_key, a.payload_hash, ref, actor, evidence=evidence, reasons=["DUPLICATE"])
        return Outcome(a.index, "DUPLICATE", receipt, row.duplicate_receipt_ref or "", a.env.event_id,
                       ("DUPLICATE",), ref)

    def _quarantine(self, r: Rejected, actor: Actor | None, ev: _Evidence) -> None:
        run = r.platform_run_id
        record_ref = self.writer.uri(quarantine_key(run, r.quarantine_id))
        kept = r.kept
        pins = {k: kept[k] for k in _PIN_KEYS if kept.get(k) is not None}
        mf = kept.get("manifest_fingerprint")
        fingerprint = mf if isinstance(mf, str) and len(mf) == 64 else "0" * 64
        now = utc_now_ts()
        record = QuarantineRecord(
            quarantine_id=r.quarantine_id, received_at_utc=now, decision="QUARANTINE", reason_codes=[r.reason],
            detail=r.detail,
            manifest_fingerprint=fingerprint, platform_run_id=run, pins=pins, policy_rev=self._policy_rev,
            envelope=kept, dropped_fields=list(r.dropped), raw_sha256=r.raw_sha256, actor=actor,
            service_release_id=self.config.service_release_id, environment=self.config.environment,
            provenance=self._provenance,
        )
        def _s(key: str) -> str | None:
            v = kept.get(key)
            return v if isinstance(v, str) else None

        receipt = Receipt(
            receipt_id=r.receipt_id, decision="QUARANTINE", event_id=r.event_id, event_type=r.event_type,
            event_class=r.event_class, ts_utc=_s("ts_utc"), manifest_fingerprint=fingerprint, platform_run_id=run,
            run_config_digest=self._policy_rev.content_digest, policy_rev=self._policy_rev, dedupe_key=r.dedupe_key,
            pins=pins, scenario_run_id=_s("scenario_run_id"),
            payload_hash=PayloadHash(algo="sha256", hex=r.payload_hash) if r.payload_hash else None,
            evidence_refs=[EvidenceRef(kind="quarantine_record", ref=record_ref)], reason_codes=[r.reason],
            schema_version=_s("schema_version"), producer=_s("producer"), actor=actor,
            service_release_id=self.config.service_release_id, environment=self.config.environment,
            provenance=self._provenance,
        )
        ev.quarantines.append((record, r))
        ev.receipts.append((receipt, len(ev.outcomes)))
        ev.outcomes.append(Outcome(r.index, "QUARANTINE", receipt, "", r.event_id, (r.reason,)))

    def _mismatch(self, a: Admissible, raw: bytes, actor: Actor | None, ev: _Evidence) -> None:
        qid, rid = quarantine_ids(a.platform_run_id, a.env.event_id, PAYLOAD_HASH_MISMATCH, a.payload_hash)
        kept = {k: v for k, v in envelope_to_dict(a.env).items() if k != "payload"}
        self._quarantine(Rejected(
            index=a.index, reason=PAYLOAD_HASH_MISMATCH,
            detail="an event with this (platform_run_id, event_class, event_id) was admitted with another payload",
            platform_run_id=a.platform_run_id, event_id=a.env.event_id, event_type=a.env.event_type,
            event_class=a.rule.event_class, kept=kept, dropped=("payload",), raw_sha256=hashlib.sha256(raw).hexdigest(),
            quarantine_id=qid, receipt_id=rid, payload_hash=a.payload_hash, dedupe_key=a.dedupe_key), actor, ev)

    # ------------------------------------------------------------------ the pipeline

    async def admit(self, raws: list[bytes], actor: Actor | None) -> list[Outcome]:
        """Decide every event of one push; outcomes in input order.

        Raises `DependencyDown` (answer 503; the push is safe to repeat as it was) or `StillInFlight`.
        """
        self.counters.batches_total += 1
        ev = _Evidence()
        primaries: dict[str, Admissible] = {}
        later: list[Admissible] = []  # same dedupe key as an earlier event: decided after it
        for i, raw in enumerate(raws):
            res = evaluate(i, raw, self.policy, self.config.fallback_run)
            if isinstance(res, Rejected):
                self._quarantine(res, actor, ev)
            elif res.dedupe_key in primaries:
                later.append(res)
            else:
                primaries[res.dedupe_key] = res

        loop = asyncio.get_running_loop()
        mine: dict[str, Admissible] = {}
        for key, a in primaries.items():
            if key in self._inflight:
                later.append(a)
            else:
                self._inflight[key] = loop.create_future()
                mine[key] = a
        committed: dict[str, EbRef] = {}
        token = uuid.uuid4().hex
        self._live_tokens.add(token)
        try:
            me, lease = self.config.instance_id, self.config.heal_lease_seconds
            claims = {key: _claimed_from(a, token) for key, a in mine.items()}
            rows = [ClaimRow(c.dedupe_key, c.platform_run_id, c.event_class, c.env.event_id, c.env.event_type,
                             c.payload_hash, c.stream, c.partition_key, c.profile_id, c.receipt_id, c.data)
                    for c in claims.values()]
            claimed, existing = await self.store.claim(rows, token, me, lease)
            take: dict[str, str] = {}  # dedupe_key -> the dead claim's token
            for key, a in mine.items():
                if key in claimed:
                    continue
                row = existing.get(key)
                if row is None or (row.state != "ADMITTED" and row.payload_hash == a.payload_hash):
                    # Pending elsewhere: ours to take over if its claimant is gone, else wait for it.
                    if row is not None and self._claimant_gone(row):
                        take[key] = row.claim_token
                    else:
                        later.append(a)
                elif row.payload_hash != a.payload_hash:
                    self._mismatch(a, raws[a.index], actor, ev)
                else:
                    ev.outcomes.append(self._duplicate_outcome(a, row, actor))
            if take:
                got = await self.store.take_over(take, token, me)
                claimed |= got
                later.extend(mine[k] for k in take if k not in got)
            to_publish = [claims[k] for k in mine if k in claimed]
            committed = await self._publish_and_settle(to_publish, ev, actor)
        finally:
            self._release(token, mine, committed)
        if later:
            outcomes, unresolved = await self._decide_later(later, raws, actor)
            ev.outcomes.extend(outcomes)
            if unresolved:
                self.counters.in_flight_503_total += 1
                raise StillInFlight(unresolved)
        ev.outcomes.sort(key=lambda o: o.index)
        return ev.outcomes

    def _release(self, token: str, keys: Iterable[str], committed: dict[str, EbRef]) -> None:
        """A request or heal is over: its token is no longer live, and whoever waits on its keys
        learns their eb_ref (None: not committed by it; they read the row)."""
        self._live_tokens.discard(token)
        for key in keys:
            fut = self._inflight.pop(key)
            if not fut.done():
                fut.set_result(committed.get(key))

    def _claimant_gone(self, row: ExistingRow) -> bool:
        """A pending row this request may take over: no live request of this process holds it, and
        its claimant is this process (a request of ours that failed) or its lease is over. (A dead
        process's claims go to the heal, which knows dead instances.)"""
        if row.claim_token in self._live_tokens:
            return False
        return row.claimed_by == self.config.instance_id or row.stale

    async def _publish_and_settle(self, to_publish: list[_Claimed], ev: _Evidence, actor: Actor | None
                                  ) -> dict[str, EbRef]:
        refs = await self.publisher.publish([PublishItem(c.stream, c.partition_key, c.data) for c in to_publish])
        if to_publish and self.config.crash_hook:
            log.error("test hook %s=%s: crashing after publish", CRASH_HOOK_ENV, self.config.crash_hook)
            if self.config.crash_hook == "exit":
                os._exit(86)
            raise RuntimeError("test hook: crash after publish")
        for c, ref in zip(to_publish, refs, strict=True):
            outcome = self._admit_outcome(c, ref, actor)
            ev.admits.append((c, ref))
            ev.receipts.append((outcome.receipt, len(ev.outcomes)))
            ev.outcomes.append(outcome)
        for i, o in enumerate(ev.outcomes):
            if o.decision == "DUPLICATE":
                if o.receipt_ref:
                    ev.reused_refs[o.receipt.receipt_id] = o.receipt_ref
                else:
                    assert o.receipt.dedupe_key is not None
                    ev.duplicate_keys[o.receipt.receipt_id] = o.receipt.dedupe_key
                    ev.receipts.append((o.receipt, i))
        return await self._settle(ev)

    def _objects(self, ev: _Evidence, skip: frozenset[str]) -> _Objects:
        """The objects of `ev`'s receipts and quarantine records, leaving out the receipts in `skip`
        (admissions and drops the settle did not get to decide), and where each receipt lands."""
        objects: list[tuple[str, object]] = [(quarantine_key(rec.platform_run_id, rec.quarantine_id), rec)
                                             for rec, r in ev.quarantines if r.receipt_id not in skip]
        refs: dict[str, str] = dict(ev.reused_refs)
        batch_ids: dict[str, str] = {}
        if self.config.receipts_layout == "batch":
            by_run: dict[str, list[Receipt]] = {}
            for receipt, _ in ev.receipts:
                if receipt.receipt_id not in skip:
                    by_run.setdefault(receipt.platform_run_id, []).append(receipt)
            now = utc_now_ts()
            for run, receipts in by_run.items():
                # Named by its content's ids, so a re-settle of the same decisions rewrites the same object.
                batch_id = hashlib.sha256("|".join(r.receipt_id for r in receipts).encode()).hexdigest()[:32]
                key = batch_key(run, batch_id)
                objects.append((key, ReceiptBatch(batch_id=batch_id, platform_run_id=run, created_at_utc=now,
                                                  receipts=receipts)))
                for r in receipts:
                    refs[r.receipt_id] = self.writer.uri(key)
                    batch_ids[r.receipt_id] = batch_id
        else:
            for receipt, _ in ev.receipts:
                if receipt.receipt_id not in skip:
                    key = receipt_key(receipt.platform_run_id, receipt.receipt_id)
                    objects.append((key, receipt))
                    refs[receipt.receipt_id] = self.writer.uri(key)
        return _Objects(objects, refs, batch_ids)

    async def _settle(self, ev: _Evidence) -> dict[str, EbRef]:
        """Commit what our claims still hold, write exactly its objects (rows locked meanwhile),
        index everything; fills in receipt refs. Raises `StillInFlight` if a claim was taken over."""
        # What the commit statement writes: each ADMIT receipt's ref as if every admission commits.
        planned = self._objects(ev, frozenset())
        admit_rows = [AdmitCommit(c.dedupe_key, c.claim_token, ref.topic, ref.partition, ref.offset,
                                  ref.published_at_utc or "", c.receipt_id, planned.refs[c.receipt_id],
                                  planned.batch_ids.get(c.receipt_id)) for c, ref in ev.admits]
        final = planned
        undecided: frozenset[str] = frozenset()

        async def evidence(decided: set[str]) -> SettleIndex:
            nonlocal final, undecided
            undecided = frozenset([c.receipt_id for c, _ in ev.admits if c.dedupe_key not in decided]
                                  + [rid for rid, (key, _) in ev.drops.items() if key not in decided])
            if undecided:
                final = self._objects(ev, undecided)
            await self.writer.put_many(final.objects)
            admit_refs = [(c.dedupe_key, final.refs[c.receipt_id], final.batch_ids.get(c.receipt_id))
                          for c, _ in ev.admits
                          if c.dedupe_key in decided and final.refs[c.receipt_id] != planned.refs[c.receipt_id]]
            receipts = []
            for receipt, _ in ev.receipts:
                if receipt.decision == "ADMIT" or receipt.receipt_id in undecided:
                    continue  # ADMITs are indexed by their commit statement
                eb = receipt.eb_ref
                receipts.append(ReceiptIndexRow(
                    receipt.platform_run_id, receipt.receipt_id, receipt.decision, receipt.event_id,
                    receipt.event_type, receipt.event_class, receipt.dedupe_key, list(receipt.reason_codes),
                    eb.topic if eb else None, eb.partition if eb else None, eb.offset if eb else None,
                    final.refs[receipt.receipt_id], final.batch_ids.get(receipt.receipt_id)))
            quarantines = [
                QuarantineIndexRow(rec.platform_run_id, rec.quarantine_id, r.event_id, r.event_type, r.reason,
                                   r.detail, self.writer.uri(quarantine_key(rec.platform_run_id, rec.quarantine_id)),
                                   r.receipt_id)
                for rec, r in ev.quarantines if r.receipt_id not in undecided]
            dup_refs = [(key, final.refs[rid]) for rid, key in ev.duplicate_keys.items()]
            return SettleIndex(receipts, quarantines, dup_refs, admit_refs)

        drops = list(ev.drops.values())
        decided = await self.store.settle(admit_rows, evidence, drops)

        lost = [c for c, _ in ev.admits if c.dedupe_key not in decided]
        committed = {c.dedupe_key: ref for c, ref in ev.admits if c.dedupe_key in decided}
        for i, o in enumerate(ev.outcomes):
            ref = final.refs.get(o.receipt.receipt_id, o.receipt_ref)
            ev.outcomes[i] = Outcome(o.index, o.decision, o.receipt, ref, o.event_id, o.reason_codes, o.eb_ref)
        self._count([o for o in ev.outcomes if o.receipt.receipt_id not in undecided])
        if lost:
            # Another claimant took these over (our claim outlived its lease): its commit is the truth.
            raise StillInFlight([c.env.event_id for c in lost])
        return committed

    def _count(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.decision == "ADMIT":
                self.counters.admit_total += 1
            elif o.decision == "DUPLICATE":
                self.counters.duplicate_total += 1
            else:
                self.counters.quarantine_total += 1
                self.counters.reasons.update(o.reason_codes)

    async def _decide_later(self, later: list[Admissible], raws: list[bytes], actor: Actor | None
                            ) -> tuple[list[Outcome], list[str]]:
        """Events held by another request (or repeated in this batch): wait, then DUPLICATE or mismatch.

        Returns the settled outcomes and the event ids still unresolved at the deadline.
        """
        deadline = time.monotonic() + self.config.in_flight_wait_seconds
        futures = [self._inflight[a.dedupe_key] for a in later if a.dedupe_key in self._inflight]
        if futures:
            await asyncio.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        pending = later
        ev = _Evidence()
        while pending:
            rows = await self.store.select(sorted({a.dedupe_key for a in pending}), self.config.heal_lease_seconds)
            still: list[Admissible] = []
            for a in pending:
                row = rows.get(a.dedupe_key)
                if row is not None and row.payload_hash != a.payload_hash:
                    self._mismatch(a, raws[a.index], actor, ev)
                elif row is not None and row.state == "ADMITTED":
                    ev.outcomes.append(self._duplicate_outcome(a, row, actor))
                else:
                    still.append(a)
            pending = still
            if pending:
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.1)
        for i, o in enumerate(ev.outcomes):
            if o.decision == "DUPLICATE":
                if o.receipt_ref:
                    ev.reused_refs[o.receipt.receipt_id] = o.receipt_ref
                elif o.receipt.receipt_id not in ev.duplicate_keys:
                    assert o.receipt.dedupe_key is not None
                    ev.duplicate_keys[o.receipt.receipt_id] = o.receipt.dedupe_key
                    ev.receipts.append((o.receipt, i))
        await self._settle(ev)
        return ev.outcomes, [a.env.event_id for a in pending]

    # ------------------------------------------------------------------ healing

    async def heal_once(self, claims: int = 1) -> int:
        """Take up to `claims` orphaned claims (a claim is one push's batch): past the lease, or made
        by a dead instance, and held by no live request of this process. Their pending rows are
        re-published and settled; a stored envelope the current policy refuses (over the record
        limit, say) is quarantined and its row deleted, so it is not retried forever.

        Returns how many claims were consumed (0: nothing orphaned is left).
        """
        me = self.config.instance_id
        token = uuid.uuid4().hex
        self._live_tokens.add(token)
        mine: list[str] = []
        committed: dict[str, EbRef] = {}
        try:
            consumed, rows = await self.store.claim_orphans(token, me, self.config.heal_lease_seconds, claims,
                                                            self._live_tokens)
            if not consumed:
                return 0
            loop = asyncio.get_running_loop()
            claimed: list[_Claimed] = []
            ev = _Evidence()
            for row in rows:
                if row.dedupe_key not in self._inflight:  # else a push of ours waits on its own future
                    self._inflight[row.dedupe_key] = loop.create_future()
                    mine.append(row.dedupe_key)
                # The stored envelope re-derives its own route and key under the current policy.
                res = evaluate(0, row.data, self.policy, self.config.fallback_run)
                if isinstance(res, Rejected):
                    log.error("pending admission %s is no longer admissible (%s: %s): quarantined",
                              row.dedupe_key, res.reason, res.detail)
                    self._quarantine(res, None, ev)
                    ev.drops[res.receipt_id] = (row.dedupe_key, row.claim_token)
                elif res.dedupe_key != row.dedupe_key:
                    log.error("pending admission %s is now dedupe key %s under the current policy; left "
                              "pending", row.dedupe_key, res.dedupe_key)
                else:
                    claimed.append(_claimed_from(res, row.claim_token))
            if claimed or ev.drops:
                committed = await self._publish_and_settle(claimed, ev, None)
                self.counters.healed_total += len(committed)
                log.warning("IG healed %d pending admission(s) (re-published; consumers dedupe)", len(committed))
            return int(consumed)
        finally:
            self._release(token, mine, committed)
