"""The statements DF runs per batch stay per-key probes whatever the table statistics say.

The trap (found by bench/bench_decision_lane.py): a table analyzed while the current run was young,
or while only another run's rows existed, estimates the current run at ~1 row, and the planner then
answers each key of a batch by walking the run's whole prefix (another index with a filter, or a
materialized scan in a nested loop): ~1 ms per key at 20k flows, growing with the run, so DF fell
from ~3,700 to ~350 decisions/s. Here: run A's rows, ANALYZE, then run B's rows; every reader DF
uses answers a batch of run B with no row removed by a filter (each key is found by its own index
probe), checked on the executed plan.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import asyncpg
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.rtdl.context_store_flow_binding.reader import _RESOLVE_SQL
from fraudrt.rtdl.decision_fabric._store import _KNOWN
from fraudrt.rtdl.identity_entity_graph.reader import _FEATURES_SQL
from fraudrt.rtdl.online_feature_plane.reader import _READ
from fraudrt.runtime import pack_columns
from fraudrt.runtime.packs import apply_migrations
from tests.support.df_lane import LANE_SQL
from tests.support.harness import MIGRATION_PACKAGES, scratch_database

pytestmark = pytest.mark.integration

N = 20_000
A, B = "platform_20300101T000000Z", "platform_20300101T000001Z"

_FILL = {
    "csfb_flow_bindings": """INSERT INTO csfb_flow_bindings (platform_run_id, flow_id, merchant_id, arrival_seq,
        anchor_event_id, anchor_hash, ts, amount, party_id, account_id, instrument_id, device_id, ip_id)
        SELECT $1, g, g % 50, g, 'e' || g, 'h', now(), 1.0, g, g, g, g, g FROM generate_series(1, $2) g""",
    "csfb_join_frames": """INSERT INTO csfb_join_frames (platform_run_id, merchant_id, arrival_seq)
        SELECT $1, g % 50, g FROM generate_series(1, $2) g""",
    "ofp_flows": """INSERT INTO ofp_flows (platform_run_id, flow_id, request_event_id, ts_us, amount_minor)
        SELECT $1, g, 'r' || g, g, 100 FROM generate_series(1, $2) g""",
    "ieg_flows": """INSERT INTO ieg_flows (platform_run_id, flow_id, event_id, ts_utc, merchant_id, arrival_seq,
        party_id, account_id, instrument_id, device_id, ip_id)
        SELECT $1, g, 'a' || g, now(), g % 50, g, g, g, g, g, g FROM generate_series(1, $2) g""",
    "df_decisions": """INSERT INTO df_decisions (platform_run_id, decision_id, source_event_id, flow_id, action,
        context_status, posture_mode, bundle_digest, content_digest, source_hash, admitted_at, decided_at, waited_ms)
        SELECT $1, md5(g::text), 's' || g, g, 'APPROVE', 'COMPLETE', 'NORMAL', 'b', 'c', 'h', now(), now(), 0
          FROM generate_series(1, $2) g""",
}


def _removed(plan: dict[str, Any]) -> int:
    """Rows any node of an executed plan read and threw away."""
    own = int(plan.get("Rows Removed by Filter", 0)) + int(plan.get("Rows Removed by Join Filter", 0))
    return own + sum(_removed(p) for p in plan.get("Plans", []))


async def _explain(conn: Any, sql: str, *args: Any) -> dict[str, Any]:
    doc = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
    plan: dict[str, Any] = json.loads(doc)[0]["Plan"]
    return plan


async def test_batch_reads_probe_each_key_after_another_runs_statistics(settings: Settings) -> None:
    async with scratch_database(settings, "plans") as dsn:
        conn = await asyncpg.connect(dsn, server_settings={"jit": "off"})
        try:
            await apply_migrations(conn, *MIGRATION_PACKAGES, *LANE_SQL)
            for sql in _FILL.values():
                await conn.execute(sql, A, N)
            await conn.execute("ANALYZE")
            for sql in _FILL.values():
                await conn.execute(sql, B, N)
            flows = list(range(1, N + 1, N // 1000))
            ids = [r[0] for r in await conn.fetch("SELECT md5(g::text) FROM generate_series(1, $1, $2) g", N,
                                                  N // 1000)]
            plans = {
                "csfb resolve_flow_binding": await _explain(conn, _RESOLVE_SQL, B, flows),
                "ofp features_for": await _explain(conn, _READ, B, *pack_columns([[str(f) for f in flows]])),
                "ieg graph_features": await _explain(conn, _FEATURES_SQL, B, *pack_columns([[str(f) for f in flows]])),
                "df known": await _explain(conn, _KNOWN, B, *pack_columns([ids])),
            }
        finally:
            await conn.close()
    removed = {name: _removed(plan) for name, plan in plans.items()}
    assert removed == dict.fromkeys(plans, 0), removed
