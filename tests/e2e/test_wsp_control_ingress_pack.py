"""Seed steps 3-7 end to end: engine world -> oracle (sync, seal, stream-sort) ->
`fraudrt pack up control_ingress` (IG + WSP in one real process, up first as in the seed) then
`fraudrt sr ready --reuse` (as `make platform-sr-run-reuse`), with a cap of 20 -> exactly 20
admitted events per in-scope output on Kinesis, each with its ADMIT receipt in S3."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import health_path
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import new_run, pack_down, pack_run_dir, pack_status, pack_up
from fraudrt.substrate import bootstrap, s3_client
from tests.integration.test_sr_ready import FRAUD_OUTPUTS, oracle_world
from tests.support.harness import kill_pack, make_scope, open_pool, read_all, read_events, wait_for

pytestmark = pytest.mark.e2e

PACK = "local_parity_control_ingress_v0"
STREAM_OF = {"arrival_events_5B": "arrival_events", "s1_arrival_entities_6B": "arrival_entities",
             "s3_flow_anchor_with_fraud_6B": "flow_anchor_fraud", "s3_event_stream_with_fraud_6B": "traffic_fraud"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_sr_ready_then_control_ingress_pack_admits_exactly_the_cap_per_output(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLATFORM_RUN_ID", raising=False)
    scope = make_scope(substrate, tmp_path / "runs")
    settings = scope.settings
    await bootstrap(settings)
    run = new_run(settings, datetime(2031, 2, 3, 4, 5, 6, tzinfo=UTC).replace(second=uuid.uuid4().int % 60))
    world = await oracle_world(settings, tmp_path / "world", n_flows=30, rows_per_part=16, row_group_rows=8)
    assert all(len(rows) > 20 for rows in world.rows.values())
    env = {**scope.env, "WSP_MAX_EVENTS_PER_OUTPUT": "20", "IG_PORT": str(_free_port()),
           "SR_RUN_EQUIVALENCE_KEY": f"parity_{uuid.uuid4().hex[:8]}"}

    try:
        # The seed's order: the always-on pack first (step 3), then SR announces the world (step 5) and
        # the running WSP picks READY up live.
        started = await anyio.to_thread.run_sync(lambda: pack_up(settings, "control_ingress", env=env))
        assert started["state"] == "started", started
        ready = await sr_ready_reuse(env, world)
        assert ready["platform_run_id"] == run and ready["kind"] == "READY"

        async with KinesisBus(settings.kinesis) as bus:
            async def on_bus() -> dict[str, list[dict[str, Any]]]:
                out = {}
                for output_id, logical in STREAM_OF.items():
                    records = await read_all(bus, settings.streams.name(logical))
                    out[output_id] = [json.loads(r.data) for r in records]
                return out

            def complete(found: dict[str, list[dict[str, Any]]]) -> bool:
                return all(len(v) >= 20 for v in found.values())

            found = await wait_for(on_bus, complete, timeout=120, interval=0.5, what="20 events per output on Kinesis")

            async with open_pool(settings) as pool:
                row = await wait_for(lambda: pool.fetchrow(
                    "SELECT status, emitted::text AS emitted FROM wsp_ready_runs WHERE message_id = $1",
                    ready["message_id"]), lambda r: r is not None and r["status"] == "STREAMED", timeout=60,
                    what="READY streamed")
            assert json.loads(row["emitted"]) == dict.fromkeys(FRAUD_OUTPUTS, 20)
            # Settle: nothing beyond the cap arrives after WSP reported the stream complete.
            found = await on_bus()
        for output_id in FRAUD_OUTPUTS:
            events = found[output_id]
            assert len(events) == 20, (output_id, len(events))
            assert {e["event_type"] for e in events} == {output_id}
            assert len({e["event_id"] for e in events}) == 20
            assert all(e["platform_run_id"] == run and e["producer"] == "svc:world_stream_producer" for e in events)

        # Every admitted event has its ADMIT receipt, pointing at where it sits on the bus.
        admitted = {e["event_id"] for events in found.values() for e in events}
        receipts: dict[str, dict[str, Any]] = {}
        async with s3_client(settings.s3) as s3:
            paginator = s3.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=settings.buckets.platform, Prefix=f"{run}/ig/receipts/"):
                for obj in page.get("Contents", []):
                    body = await (await s3.get_object(Bucket=settings.buckets.platform, Key=obj["Key"]))["Body"].read()
                    doc = json.loads(body)
                    for receipt in doc.get("receipts", [doc]):
                        receipts[receipt["event_id"]] = receipt
        assert admitted <= set(receipts)
        assert all(receipts[e]["decision"] == "ADMIT" and receipts[e]["eb_ref"]["offset_kind"] == "kinesis_sequence"
                   for e in admitted)

        log = (pack_run_dir(settings, run, PACK) / "logs" / "wsp_ready_consumer.log").read_text()
        assert "WSP stream start" in log and "WSP stream stop" in log
        for output_id in FRAUD_OUTPUTS:
            assert f"output_id={output_id} emitted=20" in log
        health = await wait_for(lambda: _read_json(health_path(Path(settings.runs_root), run,
                                                               "world_stream_producer")),
                                lambda h: h is not None and h.get("health_state") == "GREEN", timeout=30,
                                what="WSP health GREEN")
        assert health["platform_run_id"] == run
        # The first status report can predate the component tasks (one report interval), and this
        # stream can finish inside that interval: wait for a report that shows WSP running.
        status = await wait_for(lambda: _status(settings), lambda s: s["components"].get(
            "world_stream_producer", {}).get("running", False), timeout=30, what="WSP running in the status")
        assert status["components"]["world_stream_producer"]["restarts"] == 0

        stopped = await anyio.to_thread.run_sync(lambda: pack_down(settings, "control_ingress", timeout=30))
        assert stopped["state"] == "stopped"
        # The pack froze its startup heap once IG was ready, not on the deadline (60 s).
        events = read_events(pack_run_dir(settings, run, PACK) / "events.jsonl")
        frozen = [e for e in events if e["event"] == "heap_frozen"]
        assert len(frozen) == 1 and frozen[0]["services_ready"] == frozen[0]["services"] == 1, frozen
    finally:
        kill_pack(settings, PACK)


async def sr_ready_reuse(env: dict[str, str], world: Any) -> dict[str, Any]:
    """`fraudrt sr ready --reuse` for `world`, as `make platform-sr-run-reuse` runs it; its JSON result."""
    sr = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "fraudrt", "sr", "ready", "--reuse", "--engine-run-root", world.root_uri,
         "--scenario-id", world.scenario_id], env=env, cwd=project_root(), capture_output=True, text=True,
        timeout=120))
    assert sr.returncode == 0, sr.stderr
    result: dict[str, Any] = json.loads(sr.stdout)
    return result


async def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(await anyio.Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data


async def _status(settings: Any) -> dict[str, Any]:
    status: dict[str, Any] = pack_status(settings, "control_ingress")
    return status


@pytest.mark.chaos
async def test_kill_9_mid_stream_then_pack_up_resumes_from_the_checkpoint_without_gaps(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLATFORM_RUN_ID", raising=False)
    scope = make_scope(substrate, tmp_path / "runs")
    settings = scope.settings
    await bootstrap(settings)
    run = new_run(settings, datetime(2032, 3, 4, 5, 6, 7, tzinfo=UTC).replace(second=uuid.uuid4().int % 60))
    world = await oracle_world(settings, tmp_path / "world", n_flows=60, rows_per_part=16, row_group_rows=4)
    from fraudrt.contracts import parse_ts_utc

    stamps = [parse_ts_utc(r["ts_utc"]).timestamp() for rows in world.rows.values() for r in rows]
    span = max(stamps) - min(stamps)
    # Paced so the whole view takes ~8 s of wall time: long enough to kill the pack half way.
    env = {**scope.env, "WSP_MAX_EVENTS_PER_OUTPUT": "0", "WSP_STREAM_SPEEDUP": str(span / 8.0),
           "IG_PORT": str(_free_port()), "SR_RUN_EQUIVALENCE_KEY": f"chaos_{uuid.uuid4().hex[:8]}"}
    expected = {oid: len(rows) for oid, rows in world.rows.items()}
    total = sum(expected.values())
    try:
        await anyio.to_thread.run_sync(lambda: pack_up(settings, "control_ingress", env=env))
        ready = await sr_ready_reuse(env, world)

        async with open_pool(settings) as pool:
            async def acked() -> int:
                value = await pool.fetchval("SELECT COALESCE(SUM(emitted), 0) FROM wsp_checkpoints "
                                            "WHERE platform_run_id = $1", run)
                return int(value)

            at_kill = await wait_for(acked, lambda n: n >= total * 0.4, timeout=60, interval=0.05,
                                     what="40% of the view acknowledged")
            assert at_kill < total, "the stream finished before the kill: slow the pacing down"
            kill_pack(settings, PACK)  # SIGKILL: no drain, no final checkpoint

            await anyio.to_thread.run_sync(lambda: pack_up(settings, "control_ingress", env=env))
            row = await wait_for(lambda: pool.fetchrow(
                "SELECT status, emitted::text AS emitted FROM wsp_ready_runs WHERE message_id = $1",
                ready["message_id"]), lambda r: r is not None and r["status"] == "STREAMED", timeout=90,
                what="READY streamed after the restart")
            assert json.loads(row["emitted"]) == expected

        async with KinesisBus(settings.kinesis) as bus:
            for output_id, logical in STREAM_OF.items():
                events = [json.loads(r.data) for r in await read_all(bus, settings.streams.name(logical))]
                ids = [e["event_id"] for e in events]
                assert len(set(ids)) == expected[output_id], output_id  # no gap (and IG dedupes the re-push)
        # The restarted WSP resumed: it opened only the parts from its checkpoints on.
        metrics = await wait_for(lambda: _read_json(Path(settings.runs_root) / "fraud-platform" / run /
                                                    "world_stream_producer" / "metrics" / "last_metrics.json"),
                                 lambda m: m is not None and m["counters"].get("streams_completed_total") == 1,
                                 timeout=30, what="metrics of the restarted WSP")
        all_parts = sum(len(p) for p in world.parts.values())
        assert 0 < metrics["counters"]["parts_opened_total"] < all_parts
        assert metrics["counters"]["rows_decoded_total"] < total
        assert metrics["counters"]["push_duplicate_total"] <= 8 * 250  # at most the in-flight batches re-sent
    finally:
        kill_pack(settings, PACK)


async def test_each_stream_carries_its_output_in_event_time_order_through_the_real_pack(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole world through the control_ingress pack (WSP -> the real IG -> kinesalite), read back
    from each stream: no record is older than the one before it, and no record was published before
    a record (of any stream) more than the configured window older than it."""
    from fraudrt.contracts import parse_ts_utc

    monkeypatch.delenv("PLATFORM_RUN_ID", raising=False)
    scope = make_scope(substrate, tmp_path / "runs")
    settings = scope.settings
    await bootstrap(settings)
    new_run(settings, datetime(2033, 4, 5, 6, 7, 8, tzinfo=UTC).replace(second=uuid.uuid4().int % 60))
    world = await oracle_world(settings, tmp_path / "world", n_flows=200, rows_per_part=64, row_group_rows=16)
    stamps = sorted(parse_ts_utc(r["ts_utc"]).timestamp() for rows in world.rows.values() for r in rows)
    window = (stamps[-1] - stamps[0]) / 10
    expected = {oid: len(rows) for oid, rows in world.rows.items()}
    # Small batches: many pushes per output, so a scheduler that lets batches overtake shows it.
    env = {**scope.env, "WSP_MAX_EVENTS_PER_OUTPUT": "0", "FRAUDRT__WSP__PUSH_BATCH_SIZE": "20",
           "FRAUDRT__WSP__ORDER_WINDOW_SECONDS": str(window), "IG_PORT": str(_free_port()),
           "SR_RUN_EQUIVALENCE_KEY": f"order_{uuid.uuid4().hex[:8]}"}
    try:
        await anyio.to_thread.run_sync(lambda: pack_up(settings, "control_ingress", env=env))
        ready = await sr_ready_reuse(env, world)
        async with open_pool(settings) as pool:
            row = await wait_for(lambda: pool.fetchrow(
                "SELECT status, emitted::text AS emitted FROM wsp_ready_runs WHERE message_id = $1",
                ready["message_id"]), lambda r: r is not None and r["status"] not in ("PENDING", "STREAMING"),
                timeout=180, interval=0.5, what="READY streamed")
        assert row["status"] == "STREAMED" and json.loads(row["emitted"]) == expected

        published: list[tuple[float, float, str]] = []  # (arrival, event time, stream)
        async with KinesisBus(settings.kinesis) as bus:
            for output_id, logical in STREAM_OF.items():
                records = await read_all(bus, settings.streams.name(logical))
                docs = [json.loads(r.data) for r in records]
                assert len({d["event_id"] for d in docs}) == expected[output_id] == len(docs), output_id
                times = [parse_ts_utc(d["ts_utc"]).timestamp() for d in docs]
                older = [n for n in range(1, len(times)) if times[n] < times[n - 1]]
                assert older == [], f"{logical}: {len(older)} records older than the one before them"
                published.extend((r.arrival_ts, t, logical) for r, t in zip(records, times, strict=True))
        # A record more than the window older than one already on a stream arrived strictly later:
        # that is a skew beyond the bound. (Kinesis stamps arrival in milliseconds: records of one
        # millisecond are not ordered among themselves.)
        published.sort()
        newest, i = float("-inf"), 0
        while i < len(published):
            j = i
            while j < len(published) and published[j][0] == published[i][0]:
                j += 1
            for _arrival, event_time, logical in published[i:j]:
                assert event_time >= newest - window, \
                    f"{logical}: a record at t={event_time} arrived after one at t={newest} (window {window:.3f}s)"
            newest = max(newest, *(t for _a, t, _s in published[i:j]))
            i = j
    finally:
        kill_pack(settings, PACK)
