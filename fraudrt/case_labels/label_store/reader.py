"""The Label Store's typed reader: what did we know about an event's label at time T?

`labels_as_of(conn, run, event_ids, label_type, as_of)` answers for a batch of subjects in one
query. Only assertions observed at or before `as_of` count (a chargeback that arrived later is not
known yet), and AUTO assertions only when asked (`include_auto`: they are the platform's own
guesses, never training truth). Each *source* (source type and actor: one investigator, one
chargeback provider) speaks through its latest assertion, so a source that corrects itself is
superseded by its own correction. Then:

- `RESOLVED`: every source's latest says the same value (the newest of them is `selected`);
- `CONFLICT`: they disagree (or one source said two things at one instant); no value is chosen,
  and the candidates are listed, so a training set can leave the subject out or send it to a
  person, rather than learn from a coin flip (the reference chose by hash order on ties);
- `NOT_FOUND`: nothing was known yet.

`assertions_for` lists a subject's assertions as stored (all sources, all times), for people.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from fraudrt.contracts import format_ts_utc, parse_ts_utc

Status = Literal["RESOLVED", "CONFLICT", "NOT_FOUND"]

__all__ = ["Candidate", "LabelAsOf", "StoredAssertion", "assertions_for", "label_totals", "labels_as_of", "resolve"]


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    label_assertion_id: str
    label_value: str
    source_type: str
    actor_id: str | None
    effective_time: str
    observed_time: str


class LabelAsOf(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    label_type: str
    as_of: str
    status: Status
    label_value: str | None = None
    selected_assertion_id: str | None = None
    # Each source's latest assertion(s) known at `as_of`, newest first.
    candidates: list[Candidate] = msgspec.field(default_factory=list)


class StoredAssertion(msgspec.Struct, frozen=True, kw_only=True):
    label_assertion_id: str
    event_id: str
    label_type: str
    label_value: str
    source_type: str
    actor_id: str | None
    effective_time: str
    observed_time: str
    training_eligible: bool
    case_id: str | None
    committed_at: str


_COLS: Final = """label_assertion_id, event_id, label_type, label_value, source_type, actor_id, effective_time,
       observed_time, training_eligible, case_id, committed_at"""
_AS_OF_SQL: Final = f"""
SELECT {_COLS} FROM ls_label_assertions
 WHERE platform_run_id = $1 AND event_id = ANY($2::text[]) AND label_type = $3 AND observed_time <= $4
   AND (training_eligible OR $5)
"""
_ALL_SQL: Final = f"""
SELECT {_COLS} FROM ls_label_assertions
 WHERE platform_run_id = $1 AND event_id = ANY($2::text[])
 ORDER BY event_id, label_type, observed_time, label_assertion_id
"""
_TOTALS_SQL: Final = """
SELECT source_type, label_type, label_value, count(*) AS n FROM ls_label_assertions
 WHERE platform_run_id = $1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


def _stored(row: Any) -> StoredAssertion:
    return StoredAssertion(
        label_assertion_id=row["label_assertion_id"], event_id=row["event_id"], label_type=row["label_type"],
        label_value=row["label_value"], source_type=row["source_type"], actor_id=row["actor_id"],
        effective_time=format_ts_utc(row["effective_time"]), observed_time=format_ts_utc(row["observed_time"]),
        training_eligible=row["training_eligible"], case_id=row["case_id"],
        committed_at=format_ts_utc(row["committed_at"]))


def resolve(event_id: str, label_type: str, as_of: str, known: Iterable[StoredAssertion]) -> LabelAsOf:
    """The as-of answer from the assertions known at `as_of` (pure; the rule in the module doc)."""
    latest: dict[tuple[str, str | None], list[StoredAssertion]] = {}
    for a in known:
        source = (a.source_type, a.actor_id)
        current = latest.get(source)
        if current is None or a.observed_time > current[0].observed_time:
            latest[source] = [a]
        elif a.observed_time == current[0].observed_time:
            current.append(a)
    if not latest:
        return LabelAsOf(event_id=event_id, label_type=label_type, as_of=as_of, status="NOT_FOUND")
    current_rows = sorted((a for rows in latest.values() for a in rows),
                          key=lambda a: (a.observed_time, a.effective_time, a.label_assertion_id), reverse=True)
    candidates = [Candidate(label_assertion_id=a.label_assertion_id, label_value=a.label_value,
                            source_type=a.source_type, actor_id=a.actor_id, effective_time=a.effective_time,
                            observed_time=a.observed_time) for a in current_rows]
    if len({a.label_value for a in current_rows}) > 1:
        return LabelAsOf(event_id=event_id, label_type=label_type, as_of=as_of, status="CONFLICT",
                         candidates=candidates)
    top = current_rows[0]
    return LabelAsOf(event_id=event_id, label_type=label_type, as_of=as_of, status="RESOLVED",
                     label_value=top.label_value, selected_assertion_id=top.label_assertion_id, candidates=candidates)


async def labels_as_of(conn: Any, platform_run_id: str, event_ids: Sequence[str], label_type: str,
                       as_of: str | datetime, *, include_auto: bool = False) -> dict[str, LabelAsOf]:
    """Every asked event's label as known at `as_of` (a connection or a pool; one query)."""
    moment = parse_ts_utc(as_of) if isinstance(as_of, str) else as_of
    at = format_ts_utc(moment)
    rows = await conn.fetch(_AS_OF_SQL, platform_run_id, list(event_ids), label_type, moment, include_auto)
    by_event: dict[str, list[StoredAssertion]] = {}
    for row in rows:
        by_event.setdefault(row["event_id"], []).append(_stored(row))
    return {e: resolve(e, label_type, at, by_event.get(e, ())) for e in event_ids}


async def assertions_for(conn: Any, platform_run_id: str, event_ids: Sequence[str]) -> list[StoredAssertion]:
    return [_stored(r) for r in await conn.fetch(_ALL_SQL, platform_run_id, list(event_ids))]


async def label_totals(conn: Any, platform_run_id: str) -> list[dict[str, Any]]:
    """Assertions of the run by source type, label type and value (for reports)."""
    return [dict(r) for r in await conn.fetch(_TOTALS_SQL, platform_run_id)]
