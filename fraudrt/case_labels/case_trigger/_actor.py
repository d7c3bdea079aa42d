"""The CaseTrigger actor: decisions, outcomes (and audit records) in; `case_trigger` events out.

Per batch: decode each decision-lane event with its pins (a record that is not a valid envelope of
its type, or lacks pins, is dead-lettered with the reason), ask the escalation policy, give each
escalation its case subject, register the triggers in `ct_triggers` and emit the new ones through
the outbox, all in the batch's transaction. A trigger's id follows from its subject and its source
(`decision:<id>`, `action_outcome:<id>`, `audit:<id>`), so a decision read twice yields the same
trigger: a duplicate, emitted once.

Case subject: the flow (`auth_request`: the AUTH_REQUEST event the decision answers), or, as
configured, an entity of the flow read from the Context Store's binding through its reader. With
an entity subject every decision's subject is recorded (`ct_decision_subjects`), so a failed
action or an unresolved audit of that decision joins the same case; evidence whose decision is not
known (yet) is a flow case, counted (`subject_fallbacks`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar, Final

import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import (
    FLOW_SUBJECT,
    CaseSubjectKey,
    CaseTriggerPayload,
    DecisionPayload,
    Pins,
    case_envelope,
    decode_payload,
    make_case_trigger,
    trigger_problem,
)
from fraudrt.runtime import Batch, ComponentContext, InboundRecord, pack_columns, split_sql

from .._base import CountingActor
from .._ledger import Ledger
from ._policy import LANE_TYPES, Escalation, EscalationPolicy, LaneEvent, LanePayload, lane_decoder

PRODUCER: Final = "case_trigger"
_TRIGGERS: Final = Ledger("ct_triggers", ["case_trigger_id", "payload_hash", "case_id", "trigger_type",
                                          "source_ref_id"])
_SUBJECT_COLS: Final = split_sql(3, first=2)
_SAVE_SUBJECTS_SQL: Final = f"""
INSERT INTO ct_decision_subjects (platform_run_id, decision_id, event_class, event_id)
SELECT $1, t.d, t.c, t.e FROM unnest({", ".join(_SUBJECT_COLS)}) AS t(d, c, e) ON CONFLICT DO NOTHING
"""
_SUBJECTS_SQL: Final = """
SELECT decision_id, event_class, event_id FROM ct_decision_subjects
 WHERE platform_run_id = $1 AND decision_id = ANY($2::text[])
"""


class CaseTrigger(CountingActor):
    name: ClassVar[str] = "case_trigger"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.case_labels", "fraudrt.case_labels.case_trigger")
    counter_names: ClassVar[tuple[str, ...]] = ("triggers_seen", "escalations", "triggers_emitted", "duplicates",
                                                "mismatches", "dead_letters", "subject_fallbacks")

    def __init__(self) -> None:
        super().__init__()
        self.policy: EscalationPolicy | None = None
        self.subject_kind = "flow"
        self.case_stream = ""

    def subscriptions(self, settings: Settings) -> list[str]:
        streams = [settings.streams.name("rtdl")]
        if settings.case_labels.escalate_unresolved_audits:
            streams.append(settings.streams.name("audit"))
        return streams

    async def start(self, ctx: ComponentContext) -> None:
        await super().start(ctx)
        cfg = ctx.settings.case_labels
        self.policy = EscalationPolicy.from_settings(cfg)
        self.subject_kind = cfg.case_subject
        self.case_stream = ctx.settings.streams.name("case")

    # ------------------------------------------------------------------ handling

    async def handle(self, batch: Batch) -> None:
        assert self.policy is not None
        counts: Counter[str] = Counter()
        found: list[tuple[InboundRecord, LaneEvent, Pins, Escalation]] = []
        decisions: list[tuple[str, int]] = []
        for record in batch.records:
            decoded = self._decode(batch, record)
            if decoded is None:
                continue
            event, payload = decoded
            counts["triggers_seen"] += 1
            if isinstance(payload, DecisionPayload):
                decisions.append((payload.decision_id, payload.flow_id))
            escalation = self.policy.evaluate(event, payload)
            if escalation is None:
                continue
            try:
                pins = event.pins()
            except ValueError as exc:  # a case carries its run's pins: without them it cannot be opened
                batch.dead_letter(record, f"PINS_INVALID: {exc}")
                continue
            found.append((record, event, pins, escalation))
        subjects = await self._subjects(batch, decisions, [e for *_, e in found], counts)
        triggers: list[tuple[LaneEvent, CaseTriggerPayload]] = []
        for record, event, pins, esc in found:
            subject = subjects[esc.decision_id, esc.details.source_event_id]
            trigger = make_case_trigger(
                trigger_type=esc.trigger_type, source_ref_id=esc.source_ref_id, subject=subject, pins=pins,
                evidence_refs=esc.evidence, observed_time=esc.observed_time, details=esc.details)
            problem = trigger_problem(trigger)  # e.g. a Feb 30 the payload's pattern let through
            if problem is not None:
                batch.dead_letter(record, problem)
                continue
            triggers.append((event, trigger))
        counts["escalations"] += len(triggers)
        registered = await _TRIGGERS.register(
            batch.conn, batch.platform_run_id, triggers,
            [(t.case_trigger_id, t.payload_hash, t.case_id, t.trigger_type, t.source_ref_id) for _, t in triggers],
            component=batch.component, kind="case_trigger",
            payload_of=lambda item: msgspec.json.encode(item[1]).decode())
        for event, trigger in registered.new:
            event_id, key, data = case_envelope(trigger, ts_utc=trigger.trigger_payload.event_time, producer=PRODUCER,
                                                parent_event_id=event.event_id)
            batch.emit(self.case_stream, data, partition_key=key, event_id=event_id)
        counts["triggers_emitted"] += len(registered.new)
        counts["duplicates"] += len(registered.duplicates)
        counts["mismatches"] += len(registered.mismatches)
        await self.count(batch, counts)

    def _decode(self, batch: Batch, record: InboundRecord) -> tuple[LaneEvent, LanePayload] | None:
        """The event and its typed payload; None for other event types (intents: not evidence) and for
        records dead-lettered here."""
        try:
            event = lane_decoder.decode(record.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            batch.dead_letter(record, f"INVALID_EVENT: {exc}")
            return None
        if event.event_type not in LANE_TYPES:
            return None
        try:
            payload: LanePayload = decode_payload(event)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            batch.dead_letter(record, f"CONTRACT_INVALID: {event.event_type}: {exc}")
            return None
        return event, payload

    async def _subjects(self, batch: Batch, decisions: list[tuple[str, int]], found: list[Escalation],
                        counts: Counter[str]) -> dict[tuple[str, str], CaseSubjectKey]:
        """(decision_id, source event id) -> case subject of every escalation in the batch."""
        run = batch.platform_run_id
        flow = {(e.decision_id, e.details.source_event_id): CaseSubjectKey(
            platform_run_id=run, event_class=FLOW_SUBJECT, event_id=e.details.source_event_id) for e in found}
        if self.subject_kind == "flow":
            return flow
        known = await self._entity_subjects(batch, decisions)
        wanted = [e.decision_id for e in found if e.decision_id not in known]
        if wanted:
            for row in await batch.conn.fetch(_SUBJECTS_SQL, run, wanted):
                known[row["decision_id"]] = (row["event_class"], row["event_id"])
        out = {}
        for key, subject in flow.items():
            entity = known.get(key[0])
            if entity is None:
                counts["subject_fallbacks"] += 1
                out[key] = subject
            else:
                out[key] = CaseSubjectKey(platform_run_id=run, event_class=entity[0], event_id=entity[1])
        return out

    async def _entity_subjects(self, batch: Batch, decisions: list[tuple[str, int]]) -> dict[str, tuple[str, str]]:
        """Each decision's entity (from its flow's binding), recorded for its later evidence."""
        from fraudrt.rtdl.context_store_flow_binding.reader import resolve_flow_binding

        if not decisions:
            return {}
        bindings = await resolve_flow_binding(batch.conn, batch.platform_run_id, [f for _, f in decisions])
        out: dict[str, tuple[str, str]] = {}
        for decision_id, flow_id in decisions:
            binding = bindings.get(flow_id)
            if binding is None or binding.anchor is None:
                continue
            out[decision_id] = (f"entity:{self.subject_kind}", str(getattr(binding.anchor, f"{self.subject_kind}_id")))
        if out:
            await batch.conn.execute(_SAVE_SUBJECTS_SQL, batch.platform_run_id, *pack_columns(
                [list(out), [c for c, _ in out.values()], [e for _, e in out.values()]]))
        return out

    # ------------------------------------------------------------------ health and metrics

    def health_details(self) -> dict[str, Any]:
        if self.policy is None:
            return {}
        p = self.policy
        return {"case_subject": self.subject_kind, "escalate_actions": sorted(p.actions),
                "escalate_score_at_least": p.score_at_least, "escalate_outcomes": sorted(p.outcomes),
                "escalate_unresolved_audits": p.unresolved_audits, **self.metrics()}
