"""The IEG's statements: one per batch to apply it, and the loads that rebuild the graph at start.

A batch sends its flows as packed columns (`pack_columns`); Postgres derives the typed edges from
the inserted rows themselves (one row per edge type per flow, grouped), so the actor never builds
an edge row in Python and a flow id already anchored can never touch an edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from fraudrt.runtime import pack_columns, split_sql

from ._definition import EDGE_TYPES, format_us
from ._graph import Features, Observation

_FLOW_COLUMNS: Final = ("flow_id", "event_id", "ts_utc", "merchant_id", "arrival_seq", "party_id", "account_id",
                        "instrument_id", "device_id", "ip_id", "device_party_count_24h", "ip_party_count_24h",
                        "device_new_for_party", "ip_new_for_party", "instrument_account_count",
                        "neighbourhood_2hop")
_FLOW_CASTS: Final = ("bigint", "text", "timestamptz", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint",
                      "bigint", "int", "int", "boolean", "boolean", "int", "int")
_FEATURE_COLUMNS: Final = _FLOW_COLUMNS[10:]
_COLUMN_OF: Final = {"party": "party_id", "account": "account_id", "instrument": "instrument_id",
                     "device": "device_id", "ip": "ip_id", "merchant": "merchant_id"}
_EDGE_VALUES: Final = ", ".join(f"('{name}', f.{_COLUMN_OF[src]}, f.{_COLUMN_OF[dst]})"
                                for name, src, dst in EDGE_TYPES)


def _apply_sql() -> str:
    cols = split_sql(len(_FLOW_COLUMNS), first=2, casts=_FLOW_CASTS)
    n = len(_FLOW_COLUMNS)
    wm = n + 4  # after $1 (run), the packed columns and their separator and NULL marker
    return f"""
WITH input AS (
    SELECT * FROM unnest({", ".join(cols)}) AS t({", ".join(_FLOW_COLUMNS)})
), f AS (
    INSERT INTO ieg_flows (platform_run_id, {", ".join(_FLOW_COLUMNS)})
    SELECT $1, {", ".join(_FLOW_COLUMNS)} FROM input
    RETURNING ts_utc, merchant_id, party_id, account_id, instrument_id, device_id, ip_id
), e AS (
    INSERT INTO ieg_edges (platform_run_id, edge_type, src_id, dst_id, first_seen, last_seen, seen_count)
    SELECT $1, v.edge_type, v.src_id, v.dst_id, min(f.ts_utc), max(f.ts_utc), count(*)
      FROM f CROSS JOIN LATERAL (VALUES {_EDGE_VALUES}) AS v(edge_type, src_id, dst_id)
     GROUP BY v.edge_type, v.src_id, v.dst_id
    ON CONFLICT (platform_run_id, edge_type, src_id, dst_id) DO UPDATE
       SET first_seen = LEAST(ieg_edges.first_seen, EXCLUDED.first_seen),
           last_seen = GREATEST(ieg_edges.last_seen, EXCLUDED.last_seen),
           seen_count = ieg_edges.seen_count + EXCLUDED.seen_count
    RETURNING edge_type, (xmax = 0) AS inserted
), w AS (
    INSERT INTO ieg_watermarks (platform_run_id, stream, shard_id, watermark_ts, late_total)
    SELECT $1, ${wm}, s.shard_id, s.watermark_ts, s.late
      FROM unnest(${wm + 1}::text[], ${wm + 2}::text[]::timestamptz[], ${wm + 3}::bigint[])
           AS s(shard_id, watermark_ts, late)
    ON CONFLICT (platform_run_id, stream, shard_id) DO UPDATE
       SET watermark_ts = GREATEST(ieg_watermarks.watermark_ts, EXCLUDED.watermark_ts),
           late_total = ieg_watermarks.late_total + EXCLUDED.late_total, updated_at = now()
)
SELECT edge_type, count(*) FILTER (WHERE inserted)::int AS new_edges FROM e GROUP BY edge_type
"""


_APPLY_SQL: Final = _apply_sql()
_COMPLETE_COLS: Final = split_sql(7, first=2, casts=("bigint", "int", "int", "boolean", "boolean", "int", "int"))
_COMPLETE_SQL: Final = f"""
UPDATE ieg_flows AS f
   SET {", ".join(f"{c} = u.{c}" for c in _FEATURE_COLUMNS)}
  FROM unnest({", ".join(_COMPLETE_COLS)}) AS u(flow_id, {", ".join(_FEATURE_COLUMNS)})
 WHERE f.platform_run_id = $1 AND f.flow_id = u.flow_id
"""
_KNOWN_SQL: Final = f"""
SELECT flow_id, event_id FROM ieg_flows
 WHERE platform_run_id = $1 AND flow_id = ANY({split_sql(1, first=2, casts=("bigint",))[0]})
"""


def _text(value: bool | int) -> str:
    # Postgres reads 't'/'f' as booleans; str(True) would be 'True'.
    return ("t" if value else "f") if value is True or value is False else str(value)


@dataclass
class FlowRows:
    """The flows of one batch as columns (features None: the flow waits for other shards)."""

    columns: list[list[str | None]] = field(default_factory=lambda: [[] for _ in _FLOW_COLUMNS])

    def add(self, event_id: str, ts_utc: str, o: Observation, features: Features | None) -> None:
        c = self.columns
        c[0].append(str(o.flow_id))
        c[1].append(event_id)
        c[2].append(ts_utc)
        for i, value in enumerate((o.merchant, o.arrival_seq, o.party, o.account, o.instrument, o.device, o.ip), 3):
            c[i].append(str(value))
        if features is None:
            for i in range(10, 16):
                c[i].append(None)
        else:
            for i, name in enumerate(features.__struct_fields__, 10):
                c[i].append(_text(getattr(features, name)))

    def __len__(self) -> int:
        return len(self.columns[0])


async def known_flows(conn: Any, platform_run_id: str, flow_ids: Sequence[int]) -> dict[int, str]:
    """flow_id -> event_id of the flows of `flow_ids` already anchored in this run."""
    rows = await conn.fetch(_KNOWN_SQL, platform_run_id, *pack_columns([[str(f) for f in flow_ids]]))
    return {r["flow_id"]: r["event_id"] for r in rows}


async def apply_batch(conn: Any, platform_run_id: str, stream: str, flows: FlowRows,
                      watermarks: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Insert the flows, upsert their edges and the shards' (watermark, late records); new edges by type."""
    shards = sorted(watermarks)
    rows = await conn.fetch(_APPLY_SQL, platform_run_id, *pack_columns(flows.columns), stream, shards,
                            [format_us(watermarks[s][0]) for s in shards], [watermarks[s][1] for s in shards])
    return {r["edge_type"]: r["new_edges"] for r in rows}


async def complete_flows(conn: Any, platform_run_id: str, done: Sequence[tuple[int, Features]]) -> None:
    """Write the features of flows that were waiting (other shards have now passed them)."""
    columns: list[list[str | None]] = [[] for _ in range(7)]
    for flow_id, features in done:
        columns[0].append(str(flow_id))
        for i, name in enumerate(features.__struct_fields__, 1):
            columns[i].append(_text(getattr(features, name)))
    await conn.execute(_COMPLETE_SQL, platform_run_id, *pack_columns(columns))


# ---------------------------------------------------------------------------------------- loads

_US: Final = "(extract(epoch FROM {c}) * 1000000)::bigint"


async def load_watermarks(conn: Any, platform_run_id: str, stream: str) -> tuple[dict[str, int], int]:
    """shard -> applied watermark (µs), and the late records counted so far."""
    rows = await conn.fetch(f"SELECT shard_id, {_US.format(c='watermark_ts')} AS wm, late_total FROM ieg_watermarks "
                            "WHERE platform_run_id = $1 AND stream = $2", platform_run_id, stream)
    return {r["shard_id"]: r["wm"] for r in rows}, sum(r["late_total"] for r in rows)


async def load_identity_edges(conn: Any, platform_run_id: str) -> list[Any]:
    """(edge_type, src_id, dst_id, first_seen_us) of the identity graph, in first-seen order."""
    return list(await conn.fetch(
        f"SELECT edge_type, src_id, dst_id, {_US.format(c='first_seen')} AS fs FROM ieg_edges "
        "WHERE platform_run_id = $1 AND edge_type <> 'instrument_merchant' ORDER BY first_seen",
        platform_run_id))


async def load_merchants(conn: Any, platform_run_id: str) -> list[int]:
    rows = await conn.fetch("SELECT DISTINCT dst_id FROM ieg_edges WHERE platform_run_id = $1 "
                            "AND edge_type = 'instrument_merchant'", platform_run_id)
    return [r["dst_id"] for r in rows]


async def load_edge_totals(conn: Any, platform_run_id: str) -> dict[str, int]:
    rows = await conn.fetch("SELECT edge_type, count(*)::bigint AS n FROM ieg_edges WHERE platform_run_id = $1 "
                            "GROUP BY edge_type", platform_run_id)
    return {r["edge_type"]: r["n"] for r in rows}


async def load_recent_presence(conn: Any, platform_run_id: str, from_us: int) -> list[Any]:
    """(ts_us, party, device, ip) of the flows at or after `from_us`: the hour presence still needed."""
    return list(await conn.fetch(
        f"SELECT {_US.format(c='ts_utc')} AS ts, party_id, device_id, ip_id FROM ieg_flows "
        "WHERE platform_run_id = $1 AND ts_utc >= $2::text::timestamptz", platform_run_id, format_us(from_us)))


async def load_waiting(conn: Any, platform_run_id: str) -> list[Observation]:
    rows = await conn.fetch(
        f"SELECT flow_id, {_US.format(c='ts_utc')} AS ts, merchant_id, arrival_seq, party_id, account_id, "
        "instrument_id, device_id, ip_id FROM ieg_flows WHERE platform_run_id = $1 AND neighbourhood_2hop IS NULL "
        "ORDER BY ts_utc", platform_run_id)
    return [Observation(r["flow_id"], r["ts"], r["merchant_id"], r["arrival_seq"], r["party_id"], r["account_id"],
                        r["instrument_id"], r["device_id"], r["ip_id"]) for r in rows]


async def load_counts(conn: Any, platform_run_id: str, component: str) -> dict[str, int]:
    """Counters that must survive a restart: flows, dead letters and inbox mismatches of the run."""
    flows = await conn.fetchrow("SELECT count(*)::bigint AS applied, count(*) FILTER (WHERE neighbourhood_2hop "
                                "IS NULL)::bigint AS waiting FROM ieg_flows WHERE platform_run_id = $1",
                                platform_run_id)
    dead = await conn.fetchval("SELECT count(*)::bigint FROM rt_dead_letters WHERE actor = $1 AND "
                               "platform_run_id = $2", component, platform_run_id)
    mismatches = await conn.fetchval("SELECT count(*)::bigint FROM rt_inbox_mismatches WHERE component = $1 AND "
                                     "platform_run_id = $2", component, platform_run_id)
    return {"flows_applied": flows["applied"], "flows_waiting": flows["waiting"], "dead_letters": dead,
            "mismatches": mismatches}
