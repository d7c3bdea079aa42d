"""The typed reader of the IEG: the only way another package reads the graph's tables.

    rows = await graph_features(pool, platform_run_id, [flow_id, ...])   # one query per call

Every answer is as of its flow's event time, excluding the flow itself (`_definition.py`), and is
final once `complete`: it never changes afterwards, whatever the IEG applies later. An incomplete
answer says what it waits for, so the caller (DF) can wait durably and ask again:

- `FLOW_ANCHOR`: the IEG has not applied the flow's anchor yet (context still on its way);
- `EARLIER_CONTEXT`: the anchor is applied, but another shard of the anchor stream has not yet
  passed the flow's time (only with more than one shard).

`graph_version` names the graph the answer reflects (run, definition, as-of time): stamp it on the
decision. `db` is an asyncpg connection or pool (the caller's own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec

from fraudrt.contracts import format_ts_utc, ieg_graph_as_of_version, ieg_graph_as_of_versions
from fraudrt.runtime import pack_columns, split_sql

from ._definition import DEFINITION_DIGEST, to_i64

WaitingFor = Literal["FLOW_ANCHOR", "EARLIER_CONTEXT"]


class GraphFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """One flow's graph features (None while incomplete)."""

    flow_id: int
    complete: bool
    waiting_for: WaitingFor | None = None
    as_of_ts_utc: str | None = None
    graph_version: str | None = None
    definition_digest: str = DEFINITION_DIGEST
    device_party_count_24h: int | None = None
    ip_party_count_24h: int | None = None
    device_new_for_party: bool | None = None
    ip_new_for_party: bool | None = None
    instrument_account_count: int | None = None
    neighbourhood_2hop: int | None = None


class GraphProgress(msgspec.Struct, frozen=True, kw_only=True):
    """How far the IEG has applied the run: the event time every shard has passed, per shard."""

    platform_run_id: str
    shard_watermarks_ts_utc: dict[str, str]
    applied_watermark_ts_utc: str | None
    graph_version: str | None


# One primary-key probe per flow (LATERAL ... LIMIT 1): `flow_id = ANY(...)` let a table analyzed while the
# run was young walk the run's rows instead (tests/integration/test_reader_plans.py).
_FEATURES_SQL: Final = f"""
SELECT f.flow_id, f.ts_utc, f.device_party_count_24h, f.ip_party_count_24h, f.device_new_for_party,
       f.ip_new_for_party, f.instrument_account_count, f.neighbourhood_2hop
  FROM unnest({split_sql(1, first=2, casts=("bigint",))[0]}) AS q(flow_id)
  JOIN LATERAL (SELECT * FROM ieg_flows f WHERE f.platform_run_id = $1 AND f.flow_id = q.flow_id LIMIT 1) f ON true
"""


async def graph_features(db: Any, platform_run_id: str, flow_ids: Sequence[int]) -> list[GraphFeatures]:
    """The graph features of `flow_ids` (engine flow ids), in the order asked, in one query."""
    if not flow_ids:
        return []
    keys = [to_i64(f) for f in flow_ids]
    rows = await db.fetch(_FEATURES_SQL, platform_run_id, *pack_columns([[str(k) for k in keys]]))
    found = {r["flow_id"]: r for r in rows}
    as_of = {key: format_ts_utc(r["ts_utc"]) for key, r in found.items()}
    final = [key for key, r in found.items() if r["neighbourhood_2hop"] is not None]
    versions = dict(zip(final, ieg_graph_as_of_versions(platform_run_id, DEFINITION_DIGEST,
                                                        [as_of[k] for k in final]), strict=True))
    out = []
    for flow_id, key in zip(flow_ids, keys, strict=True):
        row = found.get(key)
        if row is None:
            out.append(GraphFeatures(flow_id=flow_id, complete=False, waiting_for="FLOW_ANCHOR"))
        elif key not in versions:
            out.append(GraphFeatures(flow_id=flow_id, complete=False, waiting_for="EARLIER_CONTEXT",
                                     as_of_ts_utc=as_of[key]))
        else:
            out.append(GraphFeatures(
                flow_id=flow_id, complete=True, as_of_ts_utc=as_of[key], graph_version=versions[key],
                device_party_count_24h=row["device_party_count_24h"], ip_party_count_24h=row["ip_party_count_24h"],
                device_new_for_party=row["device_new_for_party"], ip_new_for_party=row["ip_new_for_party"],
                instrument_account_count=row["instrument_account_count"],
                neighbourhood_2hop=row["neighbourhood_2hop"]))
    return out


async def graph_progress(db: Any, platform_run_id: str) -> GraphProgress:
    """The applied event-time watermark of the run (the minimum over the shards the IEG has read)."""
    rows = await db.fetch("SELECT shard_id, watermark_ts FROM ieg_watermarks WHERE platform_run_id = $1",
                          platform_run_id)
    shards = {r["shard_id"]: format_ts_utc(r["watermark_ts"]) for r in rows}
    floor = min(shards.values()) if shards else None
    version = ieg_graph_as_of_version(platform_run_id, DEFINITION_DIGEST, floor) if floor else None
    return GraphProgress(platform_run_id=platform_run_id, shard_watermarks_ts_utc=shards,
                         applied_watermark_ts_utc=floor, graph_version=version)
