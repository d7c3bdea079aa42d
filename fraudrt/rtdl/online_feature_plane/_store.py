"""OFP's statements: one batched upsert of flow rows per batch, progress, and the restore on start."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from fraudrt.runtime import pack_columns, split_sql

from ._definitions import FeatureDefinitions

# Column order of a flow row as `FlowRow` builds it (all sent as text, split and cast by Postgres).
_FLOW_COLUMNS: Final = ("flow_id", "request_event_id", "ts_us", "amount_minor", "anchor_event_id", "anchor_ts_us",
                        "merchant_id", "party_id", "account_id", "instrument_id", "device_id", "ip_id", "vector",
                        "exact", "definitions_digest")
_CASTS: Final = ("bigint", "text", "bigint", "bigint", "text", "bigint", "numeric", "bigint", "bigint", "bigint",
                 "bigint", "bigint", "bytea", "boolean", "text")
_ARRAYS: Final = split_sql(len(_FLOW_COLUMNS), first=2, casts=_CASTS)
_UPSERT_FLOWS: Final = f"""
INSERT INTO ofp_flows (platform_run_id, {", ".join(_FLOW_COLUMNS)})
SELECT $1, * FROM unnest({", ".join(_ARRAYS)})
ON CONFLICT (platform_run_id, flow_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _FLOW_COLUMNS[1:])}
WHERE ofp_flows.vector IS NULL
RETURNING flow_id
"""
# A flow row as text columns (None: NULL), in `_FLOW_COLUMNS` order.
FlowRow = tuple[str | None, ...]

_WM_ARRAYS: Final = split_sql(3, first=2, casts=("text", "text", "bigint"))
_UPSERT_WATERMARKS: Final = f"""
INSERT INTO ofp_watermarks (platform_run_id, stream, shard_id, ts_us)
SELECT $1, * FROM unnest({", ".join(_WM_ARRAYS)})
ON CONFLICT (platform_run_id, stream, shard_id) DO UPDATE SET ts_us = GREATEST(ofp_watermarks.ts_us, EXCLUDED.ts_us)
"""
_UPSERT_PROGRESS: Final = """
INSERT INTO ofp_progress (platform_run_id, flows_aggregated, flows_inexact, dead_letters, release_watermark_us)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (platform_run_id) DO UPDATE SET
    flows_aggregated = ofp_progress.flows_aggregated + EXCLUDED.flows_aggregated,
    flows_inexact = ofp_progress.flows_inexact + EXCLUDED.flows_inexact,
    dead_letters = ofp_progress.dead_letters + EXCLUDED.dead_letters,
    release_watermark_us = GREATEST(ofp_progress.release_watermark_us, EXCLUDED.release_watermark_us),
    updated_at = now()
"""


class DuplicateFlowError(Exception):
    """A second event claims a half of a flow that is already aggregated (another event id: not a
    re-publish). Raised from the batch so the runtime isolates the record and dead-letters it."""

    retriable = False


async def upsert_flows(conn: Any, platform_run_id: str, rows: Sequence[FlowRow]) -> None:
    """Write the batch's flow rows; a row that would overwrite an aggregated flow is refused."""
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    written = await conn.fetch(_UPSERT_FLOWS, platform_run_id, *pack_columns(columns))  # type: ignore[arg-type]
    if len(written) != len(rows):
        done = {r["flow_id"] for r in written}
        refused = [row[0] for row in rows if row[0] is not None and int(row[0]) not in done]
        raise DuplicateFlowError(f"DUPLICATE_FLOW: flows {refused[:5]} are already aggregated; a second "
                                 "AUTH_REQUEST or flow anchor with another event id claims them")


async def save_progress(conn: Any, platform_run_id: str, *, watermarks: dict[tuple[str, str], int],
                        aggregated: int, inexact: int, dead_letters: int, release_watermark_us: int | None) -> None:
    if watermarks:
        keys = list(watermarks)
        await conn.execute(_UPSERT_WATERMARKS, platform_run_id, *pack_columns(
            [[k[0] for k in keys], [k[1] for k in keys], [str(watermarks[k]) for k in keys]]))
    await conn.execute(_UPSERT_PROGRESS, platform_run_id, aggregated, inexact, dead_letters, release_watermark_us)


async def record_definitions(conn: Any, definitions: FeatureDefinitions) -> None:
    await conn.execute(
        "INSERT INTO ofp_definitions (digest, feature_set, version, names) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING", definitions.digest, definitions.id, definitions.version, list(definitions.names))


async def load_progress(conn: Any, platform_run_id: str) -> tuple[Any, dict[tuple[str, str], int]]:
    progress = await conn.fetchrow("SELECT * FROM ofp_progress WHERE platform_run_id = $1", platform_run_id)
    marks = await conn.fetch("SELECT stream, shard_id, ts_us FROM ofp_watermarks WHERE platform_run_id = $1",
                             platform_run_id)
    return progress, {(r["stream"], r["shard_id"]): r["ts_us"] for r in marks}


async def load_flows(conn: Any, platform_run_id: str, since_us: int) -> list[Any]:
    """Rows to restore from: every flow not aggregated yet, and the aggregated ones at or after
    `since_us` (older ones are outside every window), in the order they are folded again."""
    return list(await conn.fetch(
        "SELECT flow_id, request_event_id, ts_us, amount_minor, anchor_event_id, anchor_ts_us, merchant_id, "
        "party_id, account_id, instrument_id, device_id, ip_id, vector IS NOT NULL AS aggregated "
        "FROM ofp_flows WHERE platform_run_id = $1 AND (vector IS NULL OR ts_us >= $2) "
        "ORDER BY ts_us NULLS LAST, flow_id", platform_run_id, since_us))
