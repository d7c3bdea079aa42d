"""Trigger intake: case triggers in, cases and their timelines out, in the batch's transaction.

For a batch: register the triggers (NEW / DUPLICATE / MISMATCH; only new ones go further), create
the cases not known yet (one per subject), lock every case the batch touches in case-id order (the
investigator API locks one case at a time, so the two never deadlock), append a CASE_TRIGGERED
event per trigger and, for an escalated decision, the platform's AUTO label (never training data)
with its assertion to the outbox, and bring each case row up to date. Five statements per batch,
whatever its size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from fraudrt.contracts import CaseTriggerPayload, EvidenceRef
from fraudrt.runtime import pack_columns, split_sql

from .._ledger import Ledger
from ._timeline import CaseRef, TimelineEvent, append

AUTO_ACTOR: Final = "SYSTEM::case_mgmt"
TRIGGER_ACTOR: Final = "SYSTEM::case_trigger"
AUTO_LABEL_TYPE: Final = "fraud_disposition"

_TRIGGERS: Final = Ledger("cm_triggers", ["case_trigger_id", "payload_hash", "case_id", "trigger"],
                          ["text", "text", "text", "jsonb"])
_NEW_COLS: Final = split_sql(6, first=2, casts=["text", "text", "text", "jsonb", "timestamptz", "timestamptz"])
_CREATE_SQL: Final = f"""
INSERT INTO cm_cases (platform_run_id, case_id, subject_class, subject_id, pins, first_event_time, last_event_time)
SELECT $1, t.* FROM unnest({", ".join(_NEW_COLS)}) AS t(case_id, c, s, p, f, l)
    ON CONFLICT DO NOTHING RETURNING case_id
"""
_LOCK_SQL: Final = """
SELECT case_id, last_seq FROM cm_cases WHERE platform_run_id = $1 AND case_id = ANY($2::text[])
 ORDER BY case_id FOR UPDATE
"""
_UPD_COLS: Final = split_sql(7, first=2, casts=["text", "int", "int", "text", "text", "float8", "timestamptz"])
_UPDATE_SQL: Final = f"""
UPDATE cm_cases c SET last_seq = u.last_seq, trigger_count = c.trigger_count + u.n,
       trigger_types = ARRAY(SELECT DISTINCT x FROM unnest(c.trigger_types || string_to_array(u.types, ',')) x
                             WHERE x <> '' ORDER BY x),
       actions = ARRAY(SELECT DISTINCT x FROM unnest(c.actions || string_to_array(u.actions, ',')) x
                       WHERE x <> '' ORDER BY x),
       max_score = CASE WHEN u.score IS NULL THEN c.max_score ELSE greatest(c.max_score, u.score) END,
       last_event_time = greatest(c.last_event_time, u.last_event_time),
       version = c.version + 1, updated_at = now()
  FROM unnest({", ".join(_UPD_COLS)}) AS u(case_id, last_seq, n, types, actions, score, last_event_time)
 WHERE c.platform_run_id = $1 AND c.case_id = u.case_id
"""
_encode: Final = msgspec.json.Encoder()


@dataclass
class Intake:
    new_triggers: int = 0
    duplicates: int = 0
    mismatches: int = 0
    cases_created: int = 0
    events: list[TimelineEvent] = field(default_factory=list)

    @property
    def labels(self) -> int:
        return sum(len(e.labels) for e in self.events)


def _events_of(trigger: CaseTriggerPayload, auto_label_value: str) -> list[TimelineEvent]:
    d = trigger.trigger_payload
    case = CaseRef(trigger.case_id, trigger.case_subject_key, trigger.pins)
    summary: dict[str, Any] = {"case_trigger_id": trigger.case_trigger_id, "trigger_type": trigger.trigger_type,
                               "source_ref_id": trigger.source_ref_id, "source_event_id": d.source_event_id,
                               "escalation_reasons": list(d.escalation_reasons)}
    for name in ("action", "score", "outcome_status", "chain_status"):
        if getattr(d, name) is not None:
            summary[name] = getattr(d, name)
    triggered = TimelineEvent(case, "CASE_TRIGGERED", trigger.case_trigger_id, TRIGGER_ACTOR, "SYSTEM",
                              trigger.observed_time, summary, d.event_time, trigger.evidence_refs)
    if trigger.trigger_type != "DECISION_ESCALATION" or not auto_label_value:
        return [triggered]
    auto = TimelineEvent(case, "LABEL_ASSERTED", f"auto:{trigger.case_trigger_id}", AUTO_ACTOR, "AUTO",
                         trigger.observed_time,
                         {"label_type": AUTO_LABEL_TYPE, "label_value": auto_label_value, "source_type": "AUTO",
                          "event_ids": [d.source_event_id], "training_eligible": False},
                         d.event_time, [EvidenceRef(ref_type="CASE_EVENT", ref_id=triggered.timeline_event_id)])
    assert d.decision_id is not None
    auto.assert_labels(label_type=AUTO_LABEL_TYPE, label_value=auto_label_value,
                       subjects=[(d.source_event_id, d.event_time)], source_type="AUTO", actor_id=AUTO_ACTOR,
                       extra_evidence=[EvidenceRef(ref_type="DECISION", ref_id=d.decision_id)],
                       label_payload={"basis": ",".join(d.escalation_reasons)})
    return [triggered, auto]


async def take_triggers(conn: Any, platform_run_id: str, component: str, triggers: Sequence[CaseTriggerPayload],
                        auto_label_value: str) -> Intake:
    out = Intake()
    reg = await _TRIGGERS.register(
        conn, platform_run_id, triggers,
        [(t.case_trigger_id, t.payload_hash, t.case_id, _encode.encode(t).decode()) for t in triggers],
        component=component, kind="case_trigger", payload_of=lambda t: _encode.encode(t).decode())
    out.new_triggers, out.duplicates, out.mismatches = len(reg.new), len(reg.duplicates), len(reg.mismatches)
    if not reg.new:
        return out
    by_case: dict[str, list[CaseTriggerPayload]] = defaultdict(list)
    for t in reg.new:
        by_case[t.case_id].append(t)
    firsts = [ts[0] for ts in by_case.values()]
    times = {cid: (min(t.trigger_payload.event_time for t in ts), max(t.trigger_payload.event_time for t in ts))
             for cid, ts in by_case.items()}
    created = await conn.fetch(_CREATE_SQL, platform_run_id, *pack_columns([
        [t.case_id for t in firsts], [t.case_subject_key.event_class for t in firsts],
        [t.case_subject_key.event_id for t in firsts], [_encode.encode(t.pins).decode() for t in firsts],
        [times[t.case_id][0] for t in firsts], [times[t.case_id][1] for t in firsts]]))
    out.cases_created = len(created)
    last_seq = {r["case_id"]: r["last_seq"] for r in await conn.fetch(_LOCK_SQL, platform_run_id, list(by_case))}
    updates = []
    for cid, ts in by_case.items():
        seq = last_seq[cid]
        for t in ts:
            for event in _events_of(t, auto_label_value):
                seq += 1
                event.seq = seq
                out.events.append(event)
        scores = [t.trigger_payload.score for t in ts if t.trigger_payload.score is not None]
        updates.append((cid, str(seq), str(len(ts)), ",".join(t.trigger_type for t in ts),
                        ",".join(t.trigger_payload.action or "" for t in ts), repr(max(scores)) if scores else None,
                        times[cid][1]))
    await append(conn, platform_run_id, out.events)
    await conn.execute(_UPDATE_SQL, platform_run_id, *pack_columns([list(c) for c in zip(*updates, strict=True)]))
    return out
