"""Online Feature Plane on the real substrate: every online vector equals the offline polars one.

A generated world (several days, so every window differs; a fraud share, so keys repeat in bursts)
is put on private streams as the platform puts it (envelopes, in event-time order per stream), an
in-process OFP consumes it, and each flow's vector read through the typed reader is compared with
`offline_features` over the same world's parquet.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.engine import GenerateRequest, generate_world, output_paths, read_run_receipt
from fraudrt.rtdl.online_feature_plane import (
    OnlineFeaturePlane,
    features_for,
    load_definitions,
    offline_features,
    read_world_events,
)
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations
from tests.support.harness import LocalActor, create_streams, make_scope, open_pool, put, wait_for

pytestmark = pytest.mark.integration

OFP_SQL = "fraudrt.rtdl.online_feature_plane"
_enc = msgspec.json.Encoder()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ofp_world")
    summary = generate_world(GenerateRequest(out_dir=str(out), seed=5, n_flows=1500, duration_s=3 * 86400,
                                             fraud_rate=0.1))
    return Path(summary.engine_run_root)


@pytest.fixture(scope="module")
async def pool(settings: Settings) -> Any:
    async with open_pool(settings) as p:
        async with p.acquire() as conn:
            await apply_migrations(conn, OFP_SQL)
        yield p


@pytest.fixture(scope="module")
async def bus(settings: Settings) -> Any:
    async with KinesisBus(settings.kinesis) as b:
        yield b


def _envelopes(world: Path, output_id: str, run_id: str) -> list[tuple[str, bytes]]:
    """(ts_utc, envelope bytes) of one output, in event-time order, as IG would have admitted them."""
    receipt = read_run_receipt(world)
    df = pl.concat([pl.read_parquet(p) for p in output_paths(world, output_id, "baseline_v1", receipt=receipt)])
    df = df.sort("ts_utc", "flow_id")
    out = []
    for row in df.iter_rows(named=True):
        key = f"{output_id}|{row['flow_id']}|{row.get('event_seq', '')}"
        envelope = {
            "event_id": hashlib.sha256(key.encode()).hexdigest(), "event_type": output_id, "schema_version": "v1",
            "ts_utc": row["ts_utc"], "platform_run_id": run_id, "scenario_run_id": "0" * 32,
            "manifest_fingerprint": row["manifest_fingerprint"], "parameter_hash": row["parameter_hash"],
            "seed": row["seed"], "scenario_id": row["scenario_id"], "payload": row,
        }
        out.append((row["ts_utc"], _enc.encode(envelope)))
    return out


async def _read_all(pool: Any, run_id: str, flow_ids: list[int]) -> dict[int, Any]:
    answer = await features_for(pool, run_id, flow_ids)
    return {f.flow_id: f for f in answer.flows}


async def _flow_table_digest(pool: Any, run_id: str) -> str:
    rows = await pool.fetch("SELECT flow_id, ts_us, amount_minor, vector, exact FROM ofp_flows "
                            "WHERE platform_run_id = $1 ORDER BY flow_id", run_id)
    return hashlib.sha256(repr([tuple(r) for r in rows]).encode()).hexdigest()


async def test_online_vectors_equal_the_offline_computation_with_context_after_traffic_and_a_replay(
        substrate: Any, pool: Any, bus: KinesisBus, world: Path, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    traffic_stream, anchor_stream = await create_streams(scope.settings, ["traffic_fraud", "flow_anchor_fraud"])
    traffic = _envelopes(world, "s3_event_stream_with_fraud_6B", run)
    anchors = _envelopes(world, "s3_flow_anchor_with_fraud_6B", run)
    expected = offline_features(read_world_events(world), load_definitions())
    flow_ids = expected["flow_id"].to_list()
    names = load_definitions().names
    assert expected.select((pl.col("party_24h_count") != pl.col("party_7d_count")).sum()).item() > 0

    ofp = OnlineFeaturePlane()
    async with LocalActor(scope.settings, ofp, run, pool, bus):
        # All the traffic first: every flow waits for its anchor, none is aggregated.
        await put(bus, traffic_stream, [d for _, d in traffic])
        await wait_for(lambda: pool.fetchval("SELECT count(*) FROM ofp_flows WHERE platform_run_id = $1", run),
                       lambda n: n == len(flow_ids), timeout=120, what="every AUTH_REQUEST taken in")
        waiting = await _read_all(pool, run, flow_ids)
        assert {f.waiting_for for f in waiting.values()} == {"flow_anchor"}
        assert not any(f.complete for f in waiting.values())
        assert ofp.metrics()["waiting_requests"] == len(flow_ids)

        # Then the context: each flow is aggregated once its anchor arrives.
        await put(bus, anchor_stream, [d for _, d in anchors])
        await wait_for(lambda: features_for(pool, run, flow_ids),
                       lambda a: a.progress.flows_aggregated == len(flow_ids), timeout=120,
                       what="every flow aggregated")
        online = await _read_all(pool, run, flow_ids)
        digest_before = await _flow_table_digest(pool, run)

        mismatched = []
        for row in expected.iter_rows():
            got = online[row[0]]
            assert got.complete and got.exact and got.ts_utc == row[1]
            if list(got.values or ()) != list(row[2:]):
                mismatched.append((row[0], [(n, a, b) for n, a, b in zip(names, row[2:], got.values or (),
                                                                          strict=True) if a != b][:4]))
        assert not mismatched, f"{len(mismatched)} flows differ, e.g. {mismatched[:3]}"
        assert len({f.snapshot_digest for f in online.values()}) == len(flow_ids)

        # A replay of both streams (a relay re-publish, an IG heal) changes nothing.
        await put(bus, traffic_stream, [d for _, d in traffic])
        await put(bus, anchor_stream, [d for _, d in anchors])
        await wait_for(lambda: _dup_count(ofp), lambda n: n >= 2 * len(flow_ids), timeout=120,
                       what="the replayed records taken in as duplicates")
        assert await _flow_table_digest(pool, run) == digest_before
        assert ofp.metrics()["flows_aggregated_total"] == len(flow_ids)
        health, reasons = ofp.health()
        assert health == "GREEN", reasons

    # The tables hold no ground truth: no such column, and none of the world's campaign ids.
    columns = {r["column_name"] for r in await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name LIKE 'ofp_%'")}
    assert not columns & {"fraud_flag", "campaign_id", "is_fraud"}


async def _dup_count(ofp: OnlineFeaturePlane) -> int:
    return int(ofp.metrics()["duplicates_total"])


async def test_a_restart_mid_stream_restores_the_buckets_and_gives_the_same_vectors(
        substrate: Any, pool: Any, bus: KinesisBus, world: Path, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    traffic_stream, anchor_stream = await create_streams(scope.settings, ["traffic_fraud", "flow_anchor_fraud"])
    traffic = _envelopes(world, "s3_event_stream_with_fraud_6B", run)
    anchors = _envelopes(world, "s3_flow_anchor_with_fraud_6B", run)
    expected = offline_features(read_world_events(world), load_definitions())
    flow_ids = expected["flow_id"].to_list()
    half_ts = anchors[len(anchors) // 2][0]

    # The first half of the world, then a stop: waiting halves and buckets must survive it.
    async with LocalActor(scope.settings, OnlineFeaturePlane(), run, pool, bus):
        await put(bus, anchor_stream, [d for ts, d in anchors if ts < half_ts])
        await put(bus, traffic_stream, [d for ts, d in traffic if ts < half_ts])
        first = sum(1 for ts, _ in anchors if ts < half_ts)
        await wait_for(lambda: features_for(pool, run, flow_ids),
                       lambda a: a.progress.flows_aggregated >= first - 5, timeout=120, what="the first half")
    await put(bus, anchor_stream, [d for ts, d in anchors if ts >= half_ts])
    await put(bus, traffic_stream, [d for ts, d in traffic if ts >= half_ts])
    restarted = OnlineFeaturePlane()
    async with LocalActor(scope.settings, restarted, run, pool, bus):
        await wait_for(lambda: features_for(pool, run, flow_ids),
                       lambda a: a.progress.flows_aggregated == len(flow_ids), timeout=120, what="every flow")
        online = await _read_all(pool, run, flow_ids)
    assert restarted.restores >= 1
    wrong = [row[0] for row in expected.iter_rows() if list(online[row[0]].values or ()) != list(row[2:])]
    assert not wrong, f"{len(wrong)} flows differ after the restart"


async def test_bad_records_are_dead_lettered_with_a_reason(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    traffic_stream, anchor_stream = await create_streams(scope.settings, ["traffic_fraud", "flow_anchor_fraud"])
    base = {"event_id": "e" * 64, "ts_utc": "2026-01-01T00:00:00.000000Z", "platform_run_id": run}
    bad_traffic = [
        _enc.encode({**base, "event_id": "a" * 64, "event_type": "s3_event_stream_with_fraud_6B",
                     "payload": {"flow_id": 1}}),  # missing fields
        _enc.encode({**base, "event_id": "b" * 64, "event_type": "arrival_events_5B", "payload": {}}),
        _enc.encode({**base, "event_id": "c" * 64, "event_type": "s3_event_stream_with_fraud_6B",
                     "payload": {"flow_id": 2, "event_seq": 0, "event_type": "AUTH_REQUEST",
                                 "ts_utc": "yesterday", "amount": 1.0}}),
    ]
    bad_anchor = [_enc.encode({**base, "event_id": "d" * 64, "event_type": "s3_flow_anchor_with_fraud_6B",
                               "payload": {"flow_id": 3, "merchant_id": "not a number"}})]
    ofp = OnlineFeaturePlane()
    async with LocalActor(scope.settings, ofp, run, pool, bus):
        await put(bus, traffic_stream, bad_traffic)
        await put(bus, anchor_stream, bad_anchor)
        rows = await wait_for(
            lambda: pool.fetch("SELECT event_id, reason FROM rt_dead_letters WHERE actor = $1 AND platform_run_id = $2",
                               "online_feature_plane", run),
            lambda rs: len(rs) == 4, timeout=60, what="four dead letters")
    reasons = {r["event_id"][0]: r["reason"] for r in rows}
    assert reasons["a"].startswith("INVALID_EVENT") and "missing required field" in reasons["a"]
    assert reasons["b"].startswith("UNEXPECTED_EVENT_TYPE")
    assert reasons["c"].startswith("INVALID_EVENT") and "yesterday" in reasons["c"]
    assert reasons["d"].startswith("INVALID_EVENT")
    assert ofp.metrics()["dead_letters_total"] == 4
    assert ofp.health()[0] == "AMBER"
