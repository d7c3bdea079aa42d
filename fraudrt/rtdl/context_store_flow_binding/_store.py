"""The write side: one batch statement per step, each taking the batch as columns (`pack_columns`).

Per batch, in the runtime's transaction: upsert the frames the batch touches (each part filled once,
never overwritten), insert the new bindings (a hit when their frame is complete at that moment),
complete the bindings waiting on frames this batch completed (late joins), then add the batch's
counts to `csfb_run_stats` and, if bindings completed, `pg_notify` the new completion cursor. Four
statements per batch whatever its size; none reads more than the keys the batch carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from fraudrt.runtime import pack_columns, split_sql

# Fired (at commit, by Postgres) when a batch completed bindings; payload "<platform_run_id> <cursor>".
NOTIFY_CHANNEL: Final = "csfb_binding_complete"

FRAME_ARRIVAL_COLUMNS: Final = ("arrival_event_id", "arrival_ts", "is_virtual", "channel_group",
                                "zone_representation", "tzid_primary", "tzid_operational")
FRAME_ENTITY_COLUMNS: Final = ("entities_event_id", "party_id", "account_id", "instrument_id", "device_id",
                               "ip_id", "session_id")
_ARRIVAL_CASTS: Final = ("text", "timestamptz", "boolean", "text", "text", "text", "text")
_ENTITY_CASTS: Final = ("text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint")


def _frame_sql() -> str:
    cols = ("merchant_id", "arrival_seq", *FRAME_ARRIVAL_COLUMNS, *FRAME_ENTITY_COLUMNS)
    arrays = split_sql(len(cols), first=2, casts=("bigint", "bigint", *_ARRIVAL_CASTS, *_ENTITY_CASTS))
    # A part's columns are taken from the batch only while the stored part is absent: a part
    # already there (same event or a conflicting one) is kept as it is.
    sets = [f"{c} = CASE WHEN t.arrival_event_id IS NULL THEN EXCLUDED.{c} ELSE t.{c} END"
            for c in FRAME_ARRIVAL_COLUMNS]
    sets += [f"{c} = CASE WHEN t.entities_event_id IS NULL THEN EXCLUDED.{c} ELSE t.{c} END"
             for c in FRAME_ENTITY_COLUMNS]
    col_list = ", ".join(cols)
    return f"""
WITH input AS (
    SELECT * FROM unnest({", ".join(arrays)}) AS i({col_list})
), old AS (
    SELECT f.merchant_id, f.arrival_seq, f.arrival_event_id, f.entities_event_id
      FROM csfb_join_frames f JOIN input i USING (merchant_id, arrival_seq)
     WHERE f.platform_run_id = $1
), up AS (
    INSERT INTO csfb_join_frames AS t (platform_run_id, {col_list})
    SELECT $1, {col_list} FROM input
    ON CONFLICT (platform_run_id, merchant_id, arrival_seq) DO UPDATE SET {", ".join(sets)}
    RETURNING t.merchant_id, t.arrival_seq, t.arrival_event_id, t.entities_event_id
)
SELECT up.merchant_id, up.arrival_seq, up.arrival_event_id, up.entities_event_id,
       old.merchant_id IS NULL AS created,
       old.arrival_event_id AS old_arrival_event_id, old.entities_event_id AS old_entities_event_id
  FROM up LEFT JOIN old USING (merchant_id, arrival_seq)
"""


BINDING_COLUMNS_DB: Final = ("flow_id", "merchant_id", "arrival_seq", "anchor_event_id", "ts", "amount",
                             "party_id", "account_id", "instrument_id", "device_id", "ip_id")
_BINDING_CASTS: Final = ("bigint", "bigint", "bigint", "text", "timestamptz", "float8",
                         "bigint", "bigint", "bigint", "bigint", "bigint")


def _binding_sql() -> str:
    arrays = split_sql(len(BINDING_COLUMNS_DB), first=2, casts=_BINDING_CASTS)
    col_list = ", ".join(BINDING_COLUMNS_DB)
    # Runs after the frame upsert of the same batch, so a frame completed by this batch counts.
    return f"""
WITH input AS (
    SELECT * FROM unnest({", ".join(arrays)}) AS i({col_list})
), ins AS (
    INSERT INTO csfb_flow_bindings (platform_run_id, {col_list}, hit, completion_seq)
    SELECT $1, {", ".join(f"i.{c}" for c in BINDING_COLUMNS_DB)}, c.complete,
           CASE WHEN c.complete THEN nextval('csfb_completion_seq') END
      FROM input i
      LEFT JOIN csfb_join_frames f
        ON f.platform_run_id = $1 AND f.merchant_id = i.merchant_id AND f.arrival_seq = i.arrival_seq
     CROSS JOIN LATERAL (SELECT coalesce(f.arrival_event_id IS NOT NULL
                                         AND f.entities_event_id IS NOT NULL, false) AS complete) c
    ON CONFLICT (platform_run_id, flow_id) DO NOTHING
    RETURNING flow_id, completion_seq
)
SELECT i.flow_id, ins.flow_id IS NOT NULL AS inserted, ins.completion_seq, b.anchor_event_id AS stored_event_id
  FROM input i
  LEFT JOIN ins USING (flow_id)
  LEFT JOIN csfb_flow_bindings b ON ins.flow_id IS NULL AND b.platform_run_id = $1 AND b.flow_id = i.flow_id
"""


def _late_sql() -> str:
    keys = split_sql(2, first=2, casts=("bigint", "bigint"))
    return f"""
UPDATE csfb_flow_bindings b SET completion_seq = nextval('csfb_completion_seq')
  FROM unnest({keys[0]}, {keys[1]}) AS k(merchant_id, arrival_seq)
 WHERE b.platform_run_id = $1 AND b.merchant_id = k.merchant_id AND b.arrival_seq = k.arrival_seq
   AND b.completion_seq IS NULL
RETURNING b.flow_id, b.completion_seq
"""


STAT_COLUMNS: Final = ("bindings_total", "join_hits", "late_joins", "frames_total", "frames_complete",
                       "rejected_total", "mismatches_total", "duplicates_total")
WATERMARK_COLUMNS: Final = ("wm_arrival_events", "wm_arrival_entities", "wm_flow_anchor")


def _stats_sql() -> str:
    n = len(STAT_COLUMNS)
    wm = [f"${2 + n + i}::text::timestamptz" for i in range(len(WATERMARK_COLUMNS))]
    cursor, channel = f"${2 + n + len(WATERMARK_COLUMNS)}", f"${3 + n + len(WATERMARK_COLUMNS)}"
    values = ", ".join([*(f"${2 + i}::bigint" for i in range(n)), *wm])
    sets = [f"{c} = s.{c} + EXCLUDED.{c}" for c in STAT_COLUMNS]
    sets += [f"{c} = GREATEST(s.{c}, EXCLUDED.{c})" for c in WATERMARK_COLUMNS]
    return f"""
WITH s AS (
    INSERT INTO csfb_run_stats AS s (platform_run_id, {", ".join(STAT_COLUMNS)}, {", ".join(WATERMARK_COLUMNS)},
                                     completion_cursor)
    VALUES ($1, {values}, coalesce({cursor}::bigint, 0))
    ON CONFLICT (platform_run_id) DO UPDATE SET {", ".join(sets)},
        completion_cursor = GREATEST(s.completion_cursor, EXCLUDED.completion_cursor), updated_at = now()
    RETURNING s.completion_cursor
)
SELECT pg_notify({channel}::text, $1 || ' ' || s.completion_cursor) FROM s WHERE {cursor}::bigint IS NOT NULL
"""


FRAME_SQL: Final = _frame_sql()
BINDING_SQL: Final = _binding_sql()
LATE_SQL: Final = _late_sql()
STATS_SQL: Final = _stats_sql()


@dataclass(frozen=True, slots=True)
class FrameResult:
    merchant_id: int  # as stored (int64 bits)
    arrival_seq: int
    arrival_event_id: str | None
    entities_event_id: str | None
    created: bool
    completed_now: bool


@dataclass(frozen=True, slots=True)
class BindingResult:
    flow_id: int
    inserted: bool
    completion_seq: int | None
    stored_event_id: str | None


async def upsert_frames(conn: Any, run: str, columns: Sequence[Sequence[str | None]]) -> list[FrameResult]:
    """`columns`: merchant_id, arrival_seq, then FRAME_ARRIVAL_COLUMNS and FRAME_ENTITY_COLUMNS, as text."""
    rows = await conn.fetch(FRAME_SQL, run, *pack_columns(columns))
    out = []
    for r in rows:
        complete = r["arrival_event_id"] is not None and r["entities_event_id"] is not None
        was = (not r["created"]) and r["old_arrival_event_id"] is not None \
            and r["old_entities_event_id"] is not None
        out.append(FrameResult(r["merchant_id"], r["arrival_seq"], r["arrival_event_id"], r["entities_event_id"],
                               r["created"], complete and not was))
    return out


async def insert_bindings(conn: Any, run: str, columns: Sequence[Sequence[str | None]]) -> list[BindingResult]:
    """`columns`: BINDING_COLUMNS_DB as text. One result per input row."""
    rows = await conn.fetch(BINDING_SQL, run, *pack_columns(columns))
    return [BindingResult(r["flow_id"], r["inserted"], r["completion_seq"], r["stored_event_id"]) for r in rows]


async def complete_waiting(conn: Any, run: str, keys: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Complete the waiting bindings of frames that just completed: (flow_id, completion_seq)."""
    if not keys:
        return []
    rows = await conn.fetch(LATE_SQL, run, *pack_columns([[str(m) for m, _ in keys], [str(s) for _, s in keys]]))
    return [(r["flow_id"], r["completion_seq"]) for r in rows]


async def add_stats(conn: Any, run: str, deltas: dict[str, int], watermarks: dict[str, str | None],
                    cursor: int | None) -> None:
    """Add the batch's counts; a non-None `cursor` (bindings completed) also notifies NOTIFY_CHANNEL."""
    await conn.execute(STATS_SQL, run, *(deltas.get(c, 0) for c in STAT_COLUMNS),
                       *(watermarks.get(c) for c in WATERMARK_COLUMNS), cursor, NOTIFY_CHANNEL)


@dataclass(frozen=True, slots=True)
class StoredState:
    stats: dict[str, int]
    watermarks: dict[str, str | None]
    completion_cursor: int
    waiting: list[tuple[int, float]]  # (flow_id, bound_at epoch seconds), oldest first


async def load_state(conn: Any, run: str) -> StoredState:
    """What the actor keeps in memory, from this run's stats row and its waiting bindings (an index scan)."""
    row = await conn.fetchrow(
        f"SELECT {', '.join(STAT_COLUMNS)}, completion_cursor, "
        + ", ".join(f"to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {c}"
                    for c in WATERMARK_COLUMNS)
        + " FROM csfb_run_stats WHERE platform_run_id = $1", run)
    waiting = await conn.fetch(
        "SELECT flow_id, extract(epoch FROM bound_at)::float8 AS bound_at FROM csfb_flow_bindings "
        "WHERE platform_run_id = $1 AND completion_seq IS NULL ORDER BY bound_at", run)
    stats = {c: int(row[c]) if row else 0 for c in STAT_COLUMNS}
    watermarks = {c: row[c] if row else None for c in WATERMARK_COLUMNS}
    return StoredState(stats, watermarks, int(row["completion_cursor"]) if row else 0,
                       [(r["flow_id"], r["bound_at"]) for r in waiting])
