"""What the investigator API reads and writes: the queue, one case in full, and a person's actions.

Every action is one transaction that locks the case row (`FOR UPDATE`), so two investigators
acting on one case at once are serialised: each gets the next timeline sequence number, and an
action decided on an older version (`expected_version`) or no longer allowed by the workflow
(OPEN -> IN_REVIEW -> RESOLVED) is refused with 409, never half applied. A request id makes an
action idempotent: the same request again answers as the first time (`duplicate`), other content
under it is a 409. A label asserted here is on the timeline and in the outbox when the API
answers: durable before the answer, published by the pack's relay, never lost to a crash.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from fraudrt.contracts import (
    LABEL_VALUES,
    CaseSubjectKey,
    Pins,
    TimelineEventType,
    case_timeline_event_id,
    format_ts_utc,
    utc_now_ts,
)
from fraudrt.runtime import Emit

from ._timeline import CaseRef, TimelineEvent, append, label_emits
from ._views import ActionResult, AssignBody, CaseSummary, LabelBody, NoteBody, ResolveBody, TimelineView

# Test-only crash point (tests/chaos/test_case_labels_kill9.py): SIGKILL right after an API label's
# transaction committed, before the answer is sent.
CRASH_AFTER_LABEL_COMMIT_ENV: Final = "FRAUDRT_TEST_CM_CRASH_AFTER_LABEL_COMMIT"
MAX_PAGE: Final = 500

_CASE_COLS: Final = """case_id, subject_class, subject_id, pins, state, assignee, resolution, version, last_seq,
       trigger_count, trigger_types, actions, max_score, first_event_time, last_event_time, created_at, updated_at,
       resolved_at, extract(epoch FROM now() - created_at)::float8 AS age_seconds"""
_TIMELINE_COLS: Final = """seq, timeline_event_id, event_type, source_ref_id, actor_id, source_type, event_time,
       observed_time, recorded_at, payload"""
_LOCK_SQL: Final = f"SELECT {_CASE_COLS} FROM cm_cases WHERE platform_run_id = $1 AND case_id = $2 FOR UPDATE"
_CASE_SQL: Final = f"SELECT {_CASE_COLS} FROM cm_cases WHERE platform_run_id = $1 AND case_id = $2"
_EVENT_SQL: Final = f"SELECT {_TIMELINE_COLS} FROM cm_timeline WHERE platform_run_id = $1 AND timeline_event_id = $2"
_TIMELINE_SQL: Final = f"""
SELECT {_TIMELINE_COLS} FROM cm_timeline WHERE platform_run_id = $1 AND case_id = $2 ORDER BY seq
"""
_TRIGGERS_SQL: Final = """
SELECT trigger FROM cm_triggers WHERE platform_run_id = $1 AND case_id = $2 ORDER BY received_at, case_trigger_id
"""
_UPDATE_SQL: Final = """
UPDATE cm_cases SET state = $3, assignee = $4, resolution = $5, last_seq = $6, version = version + 1,
       updated_at = now(), resolved_at = CASE WHEN $3 = 'RESOLVED' THEN now() ELSE resolved_at END
 WHERE platform_run_id = $1 AND case_id = $2
"""


class CaseError(Exception):
    """A refused request: HTTP status, a stable code, the reason."""

    def __init__(self, status: int, code: str, detail: str, current_version: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.current_version = current_version


@dataclass(frozen=True)
class Filters:
    states: tuple[str, ...] = ()
    assignee: str | None = None
    trigger_type: str | None = None
    action: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    min_age_seconds: float | None = None
    max_age_seconds: float | None = None
    limit: int = 50
    cursor: tuple[datetime, str] | None = None


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts_utc(value)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def summary(row: Any) -> CaseSummary:
    return CaseSummary(
        case_id=row["case_id"], subject_class=row["subject_class"], subject_id=row["subject_id"], state=row["state"],
        assignee=row["assignee"], resolution=row["resolution"], version=row["version"],
        trigger_count=row["trigger_count"], trigger_types=list(row["trigger_types"]), actions=list(row["actions"]),
        max_score=row["max_score"], first_event_time=format_ts_utc(row["first_event_time"]),
        last_event_time=format_ts_utc(row["last_event_time"]), created_at=format_ts_utc(row["created_at"]),
        updated_at=format_ts_utc(row["updated_at"]), resolved_at=_ts(row["resolved_at"]),
        age_seconds=round(max(0.0, row["age_seconds"]), 3))


def timeline_view(row: Any) -> TimelineView:
    return TimelineView(
        seq=row["seq"], timeline_event_id=row["timeline_event_id"], event_type=row["event_type"],
        source_ref_id=row["source_ref_id"], actor_id=row["actor_id"], source_type=row["source_type"],
        event_time=_ts(row["event_time"]), observed_time=format_ts_utc(row["observed_time"]),
        recorded_at=format_ts_utc(row["recorded_at"]), payload=_json(row["payload"]))


def encode_cursor(s: CaseSummary) -> str:
    created = datetime.fromisoformat(s.created_at)
    return f"{int(created.timestamp() * 1_000_000)}.{s.case_id}"


def decode_cursor(text: str) -> tuple[datetime, str]:
    micros, _, case_id = text.partition(".")
    if not (micros.isascii() and micros.isdigit() and len(micros) <= 16 and len(case_id) == 32
            and all(c in "0123456789abcdef" for c in case_id)):
        raise ValueError("not a cursor this API gave out")
    try:
        return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), case_id
    except (OverflowError, ValueError, OSError) as exc:
        raise ValueError("not a cursor this API gave out") from exc


async def list_cases(db: Any, platform_run_id: str, f: Filters) -> tuple[list[CaseSummary], str | None]:
    where, args = ["platform_run_id = $1"], [platform_run_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.states:
        where.append(f"state = ANY({arg(list(f.states))}::text[])")
    if f.assignee is not None:
        where.append(f"assignee = {arg(f.assignee)}")
    if f.trigger_type is not None:
        where.append(f"{arg(f.trigger_type)} = ANY(trigger_types)")
    if f.action is not None:
        where.append(f"{arg(f.action)} = ANY(actions)")
    if f.min_score is not None:
        where.append(f"max_score >= {arg(f.min_score)}")
    if f.max_score is not None:
        where.append(f"max_score <= {arg(f.max_score)}")
    if f.min_age_seconds is not None:
        where.append(f"created_at <= now() - make_interval(secs => {arg(f.min_age_seconds)})")
    if f.max_age_seconds is not None:
        where.append(f"created_at >= now() - make_interval(secs => {arg(f.max_age_seconds)})")
    if f.cursor is not None:
        where.append(f"(created_at, case_id) < ({arg(f.cursor[0])}, {arg(f.cursor[1])})")
    sql = (f"SELECT {_CASE_COLS} FROM cm_cases WHERE {' AND '.join(where)} "
           f"ORDER BY created_at DESC, case_id DESC LIMIT {arg(f.limit + 1)}")
    rows = await db.fetch(sql, *args)
    cases = [summary(r) for r in rows[:f.limit]]
    return cases, (encode_cursor(cases[-1]) if len(rows) > f.limit else None)


async def load_case(db: Any, platform_run_id: str, case_id: str) -> tuple[CaseSummary, list[TimelineView],
                                                                          list[dict[str, Any]]]:
    """The case, its timeline in sequence order, and its triggers as received (one snapshot)."""
    async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(_CASE_SQL, platform_run_id, case_id)
        if row is None:
            raise CaseError(404, "CASE_NOT_FOUND", f"no case {case_id} in run {platform_run_id}")
        timeline = [timeline_view(r) for r in await conn.fetch(_TIMELINE_SQL, platform_run_id, case_id)]
        triggers = [_json(r["trigger"]) for r in await conn.fetch(_TRIGGERS_SQL, platform_run_id, case_id)]
    return summary(row), timeline, triggers


# ---------------------------------------------------------------------------------------- actions

Body = NoteBody | AssignBody | LabelBody | ResolveBody


_EVENT_TYPE: Final[dict[type, TimelineEventType]] = {
    NoteBody: "NOTE_ADDED", LabelBody: "LABEL_ASSERTED", AssignBody: "CASE_ASSIGNED", ResolveBody: "CASE_RESOLVED"}


def _transition(state: str, body: Body) -> str:
    """The workflow state after `body` on a case in `state` (OPEN -> IN_REVIEW -> RESOLVED), or a 409.

    Notes and labels do not move a case; assigning starts (or hands over) the review; only a case
    in review can be resolved, and a resolved case is closed to assignment."""
    if isinstance(body, NoteBody | LabelBody):
        return state
    if isinstance(body, AssignBody):
        if state == "RESOLVED":
            raise CaseError(409, "INVALID_TRANSITION", "a resolved case cannot be assigned")
        return "IN_REVIEW"
    if state != "IN_REVIEW":
        raise CaseError(409, "INVALID_TRANSITION",
                        f"only a case IN_REVIEW can be resolved (this one is {state}: assign it first)")
    return "RESOLVED"


def _request_payload(body: Body) -> dict[str, Any]:
    """What the timeline keeps of a request, and compares a retry with: its fields, without the
    concurrency token (a retry may carry a newer one) and the request id (it is the event's id)."""
    out: dict[str, Any] = msgspec.to_builtins(body)
    out.pop("expected_version", None)
    out.pop("request_id", None)
    return {k: v for k, v in out.items() if v is not None}


async def _label_subjects(conn: Any, platform_run_id: str, case_id: str, body: LabelBody) -> list[tuple[str, str]]:
    """(event id, effective time) of each event the label is about: the case's events, or those named."""
    rows = await conn.fetch(
        "SELECT DISTINCT trigger->'trigger_payload'->>'source_event_id' AS e, "
        "trigger->'trigger_payload'->>'event_time' AS t FROM cm_triggers WHERE platform_run_id = $1 AND case_id = $2",
        platform_run_id, case_id)
    known = {r["e"]: r["t"] for r in rows}
    wanted = body.event_ids if body.event_ids is not None else sorted(known)
    missing = [e for e in wanted if e not in known]
    if missing:
        raise CaseError(409, "EVENT_NOT_IN_CASE", f"{len(missing)} event id(s) are not events of this case: "
                        f"{', '.join(m[:80] for m in missing[:3])}")
    if len(wanted) > 100:
        raise CaseError(409, "TOO_MANY_EVENTS", f"the case has {len(wanted)} events: name at most 100 in event_ids")
    return [(e, body.effective_time or known[e]) for e in dict.fromkeys(wanted)]


Outbox = Callable[[Any, Sequence[Emit]], Awaitable[None]]


async def act(db: Any, *, platform_run_id: str, outbox: Outbox, case_stream: str, case_id: str, body: Body,
              principal: str) -> ActionResult:
    """Apply one investigator action to one case (see the module doc); raises CaseError when refused."""
    actor_id = f"HUMAN::{body.actor}"
    source_ref_id = f"api:{body.request_id or uuid.uuid4().hex}"
    event_type = _EVENT_TYPE[type(body)]
    request = _request_payload(body)
    async with db.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_LOCK_SQL, platform_run_id, case_id)
        if row is None:
            raise CaseError(404, "CASE_NOT_FOUND", f"no case {case_id} in run {platform_run_id}")
        prior = await conn.fetchrow(_EVENT_SQL, platform_run_id,
                                    case_timeline_event_id(case_id, event_type, source_ref_id))
        if prior is not None:
            stored = _json(prior["payload"])
            if stored.get("request") != request:
                raise CaseError(409, "IDEMPOTENCY_MISMATCH",
                                f"request_id {body.request_id} was used for another action on this case")
            return ActionResult(case=summary(row), timeline_event=timeline_view(prior), duplicate=True,
                                label_assertion_ids=list(stored.get("label_assertion_ids", [])))
        if body.expected_version is not None and body.expected_version != row["version"]:
            raise CaseError(409, "VERSION_CONFLICT", f"the case is at version {row['version']}, not "
                            f"{body.expected_version}: reload it and decide again", current_version=row["version"])
        state = _transition(row["state"], body)
        pins = Pins.from_mapping(_json(row["pins"]))
        case = CaseRef(case_id, CaseSubjectKey(platform_run_id=platform_run_id, event_class=row["subject_class"],
                                               event_id=row["subject_id"]), pins)
        event = TimelineEvent(case, event_type, source_ref_id, actor_id, "HUMAN", utc_now_ts(),
                              {"request": request, "auth_principal": principal}, seq=row["last_seq"] + 1)
        if isinstance(body, LabelBody):
            if body.label_value not in LABEL_VALUES[body.label_type]:
                raise CaseError(400, "LABEL_VALUE_INVALID", f"{body.label_value} is not a {body.label_type} value: "
                                f"{', '.join(LABEL_VALUES[body.label_type])}")
            subjects = await _label_subjects(conn, platform_run_id, case_id, body)
            event.assert_labels(label_type=body.label_type, label_value=body.label_value, subjects=subjects,
                                source_type="HUMAN", actor_id=actor_id,
                                label_payload={"note": body.note} if body.note else None)
            event.payload["label_assertion_ids"] = [a.label_assertion_id for a in event.labels]
            event.payload["event_ids"] = [e for e, _ in subjects]
        assignee = body.assignee if isinstance(body, AssignBody) else row["assignee"]
        resolution = body.resolution if isinstance(body, ResolveBody) else row["resolution"]
        await append(conn, platform_run_id, [event])
        await conn.execute(_UPDATE_SQL, platform_run_id, case_id, state, assignee, resolution, event.seq)
        await outbox(conn, label_emits([event], case_stream))
        stored = await conn.fetchrow(_EVENT_SQL, platform_run_id, event.timeline_event_id)
        after = await conn.fetchrow(_CASE_SQL, platform_run_id, case_id)
    if event.labels and os.environ.get(CRASH_AFTER_LABEL_COMMIT_ENV) == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return ActionResult(case=summary(after), timeline_event=timeline_view(stored), duplicate=False,
                        label_assertion_ids=[a.label_assertion_id for a in event.labels])

