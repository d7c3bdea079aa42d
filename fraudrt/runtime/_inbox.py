"""Idempotent intake: "have I taken in this event id, with this content, before?" (DESIGN §10).

The bus may carry an event twice (an IG heal or an outbox relay re-publishes after a crash) and a
replay re-reads what a checkpoint already covers under another run's reader. A consumer whose state
would change twice (a counter, an aggregate) takes its records in through `take_in`: in the batch's
own transaction, each (component, platform_run_id, event_id) is inserted once with its content hash.
The first copy is NEW; a later copy with the same hash is a DUPLICATE (a no-op); a copy with another
hash is a MISMATCH, recorded in `rt_inbox_mismatches` with where it was read, never applied and never
overwriting the original. Because the rows commit with the state, a crash leaves both or neither.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._pgcolumns import pack_columns, split_sql
from ._records import InboundRecord

_COLS = split_sql(2, first=3)
_TAKE_SQL = f"""
WITH input AS (
    SELECT t.event_id, t.payload_hash FROM unnest({_COLS[0]}, {_COLS[1]}) AS t(event_id, payload_hash)
), ins AS (
    INSERT INTO rt_inbox (component, platform_run_id, event_id, payload_hash)
    SELECT $1, $2, event_id, payload_hash FROM input
    ON CONFLICT DO NOTHING
    RETURNING event_id
)
SELECT i.event_id, (ins.event_id IS NOT NULL) AS inserted, old.payload_hash AS stored
  FROM input i
  LEFT JOIN ins ON ins.event_id = i.event_id
  -- One primary-key probe per input row (a plain join let the planner hash the whole run's inbox).
  LEFT JOIN LATERAL (SELECT r.payload_hash FROM rt_inbox r
                      WHERE ins.event_id IS NULL AND r.component = $1 AND r.platform_run_id = $2
                        AND r.event_id = i.event_id LIMIT 1) AS old ON true
"""

_MISMATCH_SQL = """
INSERT INTO rt_inbox_mismatches (component, platform_run_id, event_id, stored_hash, seen_hash, stream, shard_id,
                                 sequence_number)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING
"""


def content_hash(record: InboundRecord) -> str:
    """The default content hash: the record's bytes (a re-published copy is byte-identical)."""
    return hashlib.sha256(record.data).hexdigest()[:32]


@dataclass(slots=True)
class Intake:
    """What `take_in` found: the records to apply (first copies, in order) and what it set aside."""

    new: list[InboundRecord] = field(default_factory=list)
    duplicates: int = 0
    mismatches: list[InboundRecord] = field(default_factory=list)


async def take_in(conn: Any, component: str, platform_run_id: str, records: Sequence[InboundRecord],
                  hash_of: Callable[[InboundRecord], str] = content_hash) -> Intake:
    """Register `records` (all of `platform_run_id`, each with an event id) in the inbox, in `conn`'s
    transaction; returns which to apply. Records without an event id cannot be deduplicated and are
    returned as new."""
    out = Intake()
    first: dict[str, tuple[InboundRecord, str]] = {}
    order: list[InboundRecord] = []
    for record in records:
        if record.event_id is None:
            order.append(record)
            continue
        h = hash_of(record)
        seen = first.get(record.event_id)
        if seen is None:
            first[record.event_id] = (record, h)
            order.append(record)
        elif seen[1] == h:
            out.duplicates += 1
        else:
            await _mismatch(conn, component, platform_run_id, record, seen[1], h)
            out.mismatches.append(record)
    if not first:
        out.new = order
        return out
    ids = list(first)
    rows = await conn.fetch(_TAKE_SQL, component, platform_run_id,
                            *pack_columns([ids, [first[i][1] for i in ids]]))
    rejected: set[str] = set()
    for row in rows:
        if row["inserted"]:
            continue
        event_id = row["event_id"]
        record, h = first[event_id]
        rejected.add(event_id)
        if row["stored"] is None or row["stored"] == h:
            out.duplicates += 1
        else:
            await _mismatch(conn, component, platform_run_id, record, row["stored"], h)
            out.mismatches.append(record)
    out.new = [r for r in order if r.event_id is None or r.event_id not in rejected]
    return out


async def _mismatch(conn: Any, component: str, platform_run_id: str, record: InboundRecord, stored: str | None,
                    seen: str) -> None:
    await conn.execute(_MISMATCH_SQL, component, platform_run_id, record.event_id, stored, seen, record.stream,
                       record.shard_id, record.sequence_number)
