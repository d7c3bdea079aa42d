"""The investigator API's bodies and answers, as closed msgspec structs.

Request bodies are decoded straight into these (unknown fields, wrong types, bad patterns: a 400
with msgspec's message), and the OpenAPI document's schemas are generated from the same structs,
so the document cannot drift from what the server enforces.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from fraudrt.contracts import CaseState, LabelType, Resolution, TimelineEventType


def _calendar_pattern() -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` for real calendar days of 1900-2099, leap days included, as one
    regular expression: the document's pattern is then exactly what the server takes (a Feb 30 or a
    year 0 is invalid input to both, never a schema-valid request the server refuses)."""
    leap = "|".join(str(y) for y in range(1904, 2100, 4))
    day = ("(?:(?:01|03|05|07|08|10|12)-(?:0[1-9]|[12][0-9]|3[01])|(?:04|06|09|11)-(?:0[1-9]|[12][0-9]|30)"
           "|02-(?:0[1-9]|1[0-9]|2[0-8]))")
    return (rf"^(?:(?:19|20)[0-9]{{2}}-{day}|(?:{leap})-02-29)"
            r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{6}Z\Z")


CALENDAR_TS_PATTERN: Final = _calendar_pattern()
CalendarTs = Annotated[str, Meta(pattern=CALENDAR_TS_PATTERN,
                                 description="YYYY-MM-DDTHH:MM:SS.ffffffZ, a real UTC time of 1900-2099")]

# A person's name as they sign their actions (stored as HUMAN::<name>).
Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z",
                           description="a name token: letters, digits and . _ @ -, at most 64")]
# Retrying a request with the same request_id is safe: the same content answers as before
# (duplicate: true); other content under a used request_id is a 409.
RequestId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z",
                                description="idempotency key of this action (any token up to 128 characters)")]
Text = Annotated[str, Meta(min_length=1, max_length=4000, pattern=r"^[^\x00]*\Z", description="free text, no NUL")]
Version = Annotated[int, Meta(ge=1, le=2**53, description="the case version this action was decided on")]
EventIdText = Annotated[str, Meta(min_length=1, max_length=256, pattern=r"^[^\x00]*\Z")]
LabelValue = Literal["FRAUD_CONFIRMED", "FRAUD_SUSPECTED", "LEGIT_CONFIRMED", "CHARGEBACK", "NO_CHARGEBACK",
                     "PENDING", "ATO_CONFIRMED", "ATO_SUSPECTED", "ATO_NOT_CONFIRMED"]


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    actor: Name
    request_id: RequestId | None = None
    # Optimistic concurrency: when given, the action applies only to this version of the case
    # (else 409 VERSION_CONFLICT with the current one).
    expected_version: Version | None = None


class NoteBody(_Body, frozen=True, kw_only=True):
    text: Text


class AssignBody(_Body, frozen=True, kw_only=True):
    assignee: Name


class LabelBody(_Body, frozen=True, kw_only=True):
    label_type: LabelType
    label_value: LabelValue
    # Which of the case's events the label is about; default: every event of the case.
    event_ids: Annotated[list[EventIdText], Meta(min_length=1, max_length=100)] | None = None
    # When the label is true of the world; default: each event's own time.
    effective_time: CalendarTs | None = None
    note: Text | None = None


class ResolveBody(_Body, frozen=True, kw_only=True):
    resolution: Resolution
    note: Text | None = None


class CaseSummary(msgspec.Struct, frozen=True, kw_only=True):
    case_id: str
    subject_class: str
    subject_id: str
    state: CaseState
    assignee: str | None
    resolution: str | None
    version: int
    trigger_count: int
    trigger_types: list[str]
    actions: list[str]
    max_score: float | None
    first_event_time: str
    last_event_time: str
    created_at: str
    updated_at: str
    resolved_at: str | None
    age_seconds: float


class TimelineView(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    timeline_event_id: str
    event_type: TimelineEventType
    source_ref_id: str
    actor_id: str
    source_type: str
    event_time: str | None
    observed_time: str
    recorded_at: str
    payload: dict[str, Any]


class CaseList(msgspec.Struct, frozen=True, kw_only=True):
    cases: list[CaseSummary]
    next_cursor: str | None


class ActionResult(msgspec.Struct, frozen=True, kw_only=True):
    case: CaseSummary
    timeline_event: TimelineView
    duplicate: bool
    label_assertion_ids: list[str]


class FeatureView(msgspec.Struct, frozen=True, kw_only=True):
    """One flow's features as the projectors hold them (via their readers), or why not."""

    flow_id: int
    online: dict[str, int] | None = None
    online_complete: bool = False
    online_definitions_digest: str | None = None
    graph: dict[str, Any] | None = None
    graph_complete: bool = False
    unavailable: list[str] = msgspec.field(default_factory=list)


class CaseDetail(msgspec.Struct, frozen=True, kw_only=True):
    case: CaseSummary
    timeline: list[TimelineView]
    # Each trigger as received: the decision's action, score, reasons, rules, top features, ...
    evidence: list[dict[str, Any]]
    features: list[FeatureView]
    # Label Store: every assertion about the case's events, and the fraud_disposition as known now.
    labels: list[dict[str, Any]]
    labels_now: list[dict[str, Any]]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    error: str
    detail: str | None = None
    current_version: int | None = None
