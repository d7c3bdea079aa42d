"""Timeline events and the label assertions they carry: built here for both writers of a case
(the trigger intake and the investigator API), appended with one statement.

A timeline event's id is the reference recipe over (case, type, source ref): the trigger id for
CASE_TRIGGERED, `auto:<trigger id>` for the platform's AUTO label, `api:<request id>` for a person's
action, so a replay or a retried request lands on the same id. Its hash is the reference's timeline
payload hash. A label asserted on the timeline leaves as `label_assertion` events through the
outbox, in the same transaction: a crash never keeps one without the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from fraudrt.contracts import (
    CaseSubjectKey,
    EvidenceRef,
    LabelAssertionPayload,
    LabelSubjectKey,
    LabelType,
    Pins,
    SourceType,
    TimelineEventType,
    case_envelope,
    case_timeline_event_id,
    case_timeline_payload_hash,
    make_label_assertion,
)
from fraudrt.runtime import Emit, pack_columns, split_sql

PRODUCER: Final = "case_mgmt"

_COLS: Final = split_sql(11, first=2, casts=["text", "int", "text", "text", "text", "text", "text", "timestamptz",
                                             "timestamptz", "jsonb", "text"])
_INSERT_SQL: Final = f"""
INSERT INTO cm_timeline (platform_run_id, case_id, seq, timeline_event_id, event_type, source_ref_id, actor_id,
                         source_type, event_time, observed_time, payload, payload_hash)
SELECT $1, t.* FROM unnest({", ".join(_COLS)})
    AS t(case_id, seq, timeline_event_id, event_type, source_ref_id, actor_id, source_type, event_time,
         observed_time, payload, payload_hash)
"""
_json: Final = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True, slots=True)
class CaseRef:
    """What a timeline event needs to know about its case."""

    case_id: str
    subject: CaseSubjectKey
    pins: Pins


@dataclass
class TimelineEvent:
    case: CaseRef
    event_type: TimelineEventType
    source_ref_id: str
    actor_id: str
    source_type: str
    observed_time: str
    payload: dict[str, Any]
    event_time: str | None = None
    evidence: Sequence[EvidenceRef] = ()
    seq: int = 0  # assigned under the case row's lock
    labels: list[LabelAssertionPayload] = field(default_factory=list)

    @property
    def timeline_event_id(self) -> str:
        return case_timeline_event_id(self.case.case_id, self.event_type, self.source_ref_id)

    @property
    def payload_hash(self) -> str:
        return case_timeline_payload_hash(
            case_id=self.case.case_id, timeline_event_type=self.event_type, source_ref_id=self.source_ref_id,
            pins=msgspec.to_builtins(self.case.pins), observed_time=self.observed_time,
            evidence_refs=msgspec.to_builtins(list(self.evidence)), timeline_payload=self.payload,
            case_subject_key=msgspec.to_builtins(self.case.subject))

    def assert_labels(self, *, label_type: LabelType, label_value: str, subjects: Sequence[tuple[str, str]],
                      source_type: SourceType, actor_id: str, extra_evidence: Sequence[EvidenceRef] = (),
                      label_payload: dict[str, str] | None = None) -> None:
        """One assertion per (event id, effective time) in `subjects`, resting on this timeline event."""
        tid = self.timeline_event_id
        evidence = [EvidenceRef(ref_type="CASE_EVENT", ref_id=tid), *extra_evidence]
        for event_id, effective_time in subjects:
            self.labels.append(make_label_assertion(
                case_timeline_event_id=tid,
                subject=LabelSubjectKey(platform_run_id=self.case.subject.platform_run_id, event_id=event_id),
                pins=self.case.pins, label_type=label_type, label_value=label_value, effective_time=effective_time,
                observed_time=self.observed_time, source_type=source_type, actor_id=actor_id,
                evidence_refs=evidence, case_id=self.case.case_id, label_payload=label_payload))


def label_emits(events: Sequence[TimelineEvent], stream: str) -> list[Emit]:
    out = []
    for event in events:
        for label in event.labels:
            event_id, key, data = case_envelope(label, ts_utc=label.effective_time, producer=PRODUCER,
                                                parent_event_id=event.timeline_event_id)
            out.append(Emit(stream, key, event_id, data))
    return out


async def append(conn: Any, platform_run_id: str, events: Sequence[TimelineEvent]) -> None:
    """Insert `events` (their `seq` assigned) in one statement."""
    if not events:
        return
    rows = [(e.case.case_id, str(e.seq), e.timeline_event_id, e.event_type, e.source_ref_id, e.actor_id,
             e.source_type, e.event_time, e.observed_time, _json.encode(e.payload).decode(), e.payload_hash)
            for e in events]
    await conn.execute(_INSERT_SQL, platform_run_id, *pack_columns([list(col) for col in zip(*rows, strict=True)]))
