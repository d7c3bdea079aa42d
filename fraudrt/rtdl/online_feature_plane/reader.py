"""The typed reader of OFP's state: the only way another package reads `ofp_*` tables.

`features_for(conn, platform_run_id, flow_ids)` answers a batch of flows with one statement (flow
ids in, rows out, by primary key): for each flow its vector as of the flow's event time (the flow
itself excluded; see docs/architecture.md, "Online Feature Plane"), the digest of the definitions
it was computed with, a digest of the vector, and whether it is *complete*. A flow that is not
complete has no vector yet; `waiting_for` says what is missing, so DF can wait for it durably:

- `flow`: OFP has taken in neither half of the flow;
- `auth_request` / `flow_anchor`: one half is in, the other is not;
- `watermark`: both are in, and OFP waits for every shard to reach the flow's event time.

A complete vector never changes afterwards, so a decision made on it is reproducible.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec

from fraudrt.contracts import ofp_vector_digest
from fraudrt.runtime import pack_columns, split_sql

from ._actor import format_us

WaitingFor = Literal["flow", "auth_request", "flow_anchor", "watermark"]


class FlowFeatures(msgspec.Struct, frozen=True, kw_only=True):
    flow_id: int
    complete: bool
    # The flow's event time (its AUTH_REQUEST's ts_utc); None until the request is taken in.
    ts_utc: str | None = None
    # Feature values in the order of the definitions' `names` (integers; amounts in minor units).
    values: tuple[int, ...] | None = None
    # False: the vector was computed after out-of-order input (the as-of guarantee did not hold).
    exact: bool | None = None
    definitions_digest: str | None = None
    snapshot_digest: str | None = None
    waiting_for: WaitingFor | None = None


class OfpProgress(msgspec.Struct, frozen=True, kw_only=True):
    """What OFP had applied when the batch was read (one snapshot with the flows)."""

    flows_aggregated: int = 0
    # Every flow at or before this event time whose halves are both in has been aggregated.
    release_watermark_ts_utc: str | None = None


class FeatureBatch(msgspec.Struct, frozen=True, kw_only=True):
    platform_run_id: str
    flows: list[FlowFeatures]  # in the order asked
    progress: OfpProgress


_IDS: Final = split_sql(1, first=2, casts=("bigint",))[0]
# One primary-key probe per flow (LATERAL ... LIMIT 1): as a plain join, a table analyzed while the run
# was young estimates the run at ~1 row and the planner scans the run's rows for every flow of the
# batch (tests/integration/test_reader_plans.py).
_READ: Final = f"""
SELECT q.flow_id, f.request_event_id IS NOT NULL AS has_request, f.anchor_event_id IS NOT NULL AS has_anchor,
       f.ts_us, f.vector, f.exact, f.definitions_digest, p.flows_aggregated, p.release_watermark_us
  FROM unnest({_IDS}) WITH ORDINALITY AS q(flow_id, ord)
  LEFT JOIN LATERAL (SELECT f.request_event_id, f.anchor_event_id, f.ts_us, f.vector, f.exact, f.definitions_digest
                       FROM ofp_flows f WHERE f.platform_run_id = $1 AND f.flow_id = q.flow_id LIMIT 1) f ON true
  LEFT JOIN ofp_progress p ON p.platform_run_id = $1
 ORDER BY q.ord
"""
_unpackers: dict[int, Any] = {}


def _values(vector: bytes) -> tuple[int, ...]:
    n = len(vector) // 8
    unpack = _unpackers.get(n)
    if unpack is None:
        unpack = _unpackers[n] = struct.Struct(f"<{n}q").unpack
    result: tuple[int, ...] = unpack(vector)
    return result


async def features_for(conn: Any, platform_run_id: str, flow_ids: Sequence[int]) -> FeatureBatch:
    """The features of `flow_ids` (a connection or a pool), in one statement and one snapshot."""
    if not flow_ids:
        progress = await conn.fetchrow(
            "SELECT flows_aggregated, release_watermark_us FROM ofp_progress WHERE platform_run_id = $1",
            platform_run_id)
        return FeatureBatch(platform_run_id=platform_run_id, flows=[], progress=_progress(progress))
    rows = await conn.fetch(_READ, platform_run_id, *pack_columns([[str(int(f)) for f in flow_ids]]))
    flows = []
    for row in rows:
        fid = row["flow_id"]
        ts = format_us(row["ts_us"]) if row["ts_us"] is not None else None
        vector = row["vector"]
        if vector is not None:
            values = _values(vector)
            digest = row["definitions_digest"]
            flows.append(FlowFeatures(
                flow_id=fid, complete=True, ts_utc=ts, values=values, exact=row["exact"],
                definitions_digest=digest,
                snapshot_digest=ofp_vector_digest(digest, platform_run_id, fid, ts or "", values)))
            continue
        waiting: WaitingFor
        if row["has_request"] and row["has_anchor"]:
            waiting = "watermark"
        elif row["has_request"]:
            waiting = "flow_anchor"
        elif row["has_anchor"]:
            waiting = "auth_request"
        else:
            waiting = "flow"
        flows.append(FlowFeatures(flow_id=fid, complete=False, ts_utc=ts, waiting_for=waiting))
    return FeatureBatch(platform_run_id=platform_run_id, flows=flows, progress=_progress(rows[0] if rows else None))


def _progress(row: Any) -> OfpProgress:
    if row is None or row["flows_aggregated"] is None:
        return OfpProgress()
    wm = row["release_watermark_us"]
    return OfpProgress(flows_aggregated=row["flows_aggregated"],
                       release_watermark_ts_utc=format_us(wm) if wm is not None else None)


async def feature_names(conn: Any, definitions_digest: str) -> tuple[str, ...] | None:
    """The feature names of the definitions with `definitions_digest` (None if OFP never used it)."""
    names = await conn.fetchval("SELECT names FROM ofp_definitions WHERE digest = $1", definitions_digest)
    return tuple(names) if names is not None else None
