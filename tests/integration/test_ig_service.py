"""IG in-process on a free port against the session substrate, with private streams.

Checks the contract end to end: records on the right Kinesis stream at the receipts' eb_ref,
DUPLICATE with the original eb_ref, PAYLOAD_HASH_MISMATCH, quarantine without payload, 401/400/413,
Postgres down -> 503 then recovery (through a TCP proxy the test can cut), concurrent pushes of one
event publish it once, a crash between publish and commit healed on restart (a real process exit).
Bad input (never a 5xx) is `test_ig_bad_input.py`; claims and heals are `test_ig_claims.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from fraudrt.config import Settings, project_root
from fraudrt.control_ingress.ingestion_gate import CRASH_HOOK_ENV, ig_api_key

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from tests.support.ig import (
    RunningIg,
    TcpProxy,
    arrival,
    close_s3_clients,
    decision,
    free_port,
    get_object,
    new_run_id,
    push,
    running_ig,
    serve_ig,
    stream_records,
    traffic,
    via_proxy,
    wait_up,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def ig(private_streams: Settings) -> AsyncIterator[RunningIg]:
    async with running_ig(private_streams, new_run_id()) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module", autouse=True)
async def _close_s3_clients() -> AsyncIterator[None]:
    yield
    await close_s3_clients()


# ---------------------------------------------------------------- admission and evidence


async def test_batch_admit_lands_on_routed_streams_at_the_receipts_eb_ref(ig: RunningIg,
                                                                         http: aiohttp.ClientSession) -> None:
    run = ig.run_id
    events = [traffic(run, i) for i in range(6)] + [arrival(run, i) for i in range(3)] + [decision(run)]
    status, body, _ = await push(http, ig, {"events": events})
    assert status == 200, body
    assert [r["decision"] for r in body["results"]] == ["ADMIT"] * len(events)
    assert body["admit"] == len(events)
    s = ig.settings.streams
    expected = {"s3_event_stream_with_fraud_6B": s.name("traffic_fraud"), "arrival_events_5B": s.name("arrival_events"),
                "decision_response": s.name("rtdl")}
    on_bus: dict[str, dict[str, dict[str, Any]]] = {}
    for stream in set(expected.values()):
        on_bus[stream] = {seq: env for seq, env in await stream_records(ig.settings, stream)}
    for env, res in zip(events, body["results"], strict=True):
        ref = res["eb_ref"]
        assert ref["topic"] == expected[env["event_type"]]
        assert ref["offset_kind"] == "kinesis_sequence" and ref["partition"] == 0
        record = on_bus[ref["topic"]][ref["offset"]]  # the record at the receipt's sequence number ...
        assert record["event_id"] == env["event_id"]  # ... is this event
        assert record["payload"] == env["payload"]
        assert res["receipt_ref"] == f"s3://{ig.settings.buckets.platform}/{run}/ig/receipts/{res['receipt_id']}.json"
        receipt = await get_object(ig.settings, res["receipt_ref"])
        assert receipt["decision"] == "ADMIT" and receipt["eb_ref"]["offset"] == ref["offset"]
        assert receipt["platform_run_id"] == run and receipt["event_id"] == env["event_id"]
        assert receipt["actor"]["principal"].startswith("key-") and ig.key not in json.dumps(receipt)
    assert sum(len(v) for v in on_bus.values()) == len(events)  # one record per event, nothing else

    async with http.get(f"{ig.url}/v1/ops/lookup", params={"event_id": events[0]["event_id"]},
                        headers=ig.headers()) as resp:
        assert resp.status == 200
        matches = (await resp.json())["matches"]
    assert [m["decision"] for m in matches] == ["ADMIT"]
    assert matches[0]["eb_offset"] == body["results"][0]["eb_ref"]["offset"]
    async with http.get(f"{ig.url}/v1/ops/lookup", params={"receipt_id": body["results"][1]["receipt_id"]},
                        headers=ig.headers()) as resp:
        assert (await resp.json())["matches"][0]["event_id"] == events[1]["event_id"]
    assert ig.service.metrics()["admit_total"] == len(events)


async def test_repush_is_duplicate_with_original_eb_ref_and_changed_payload_is_mismatch(
        ig: RunningIg, http: aiohttp.ClientSession) -> None:
    run = ig.run_id
    events = [traffic(run, i) for i in range(4)]
    _, first, _ = await push(http, ig, {"events": events})
    assert first["admit"] == 4
    status, again, _ = await push(http, ig, {"events": events})
    assert status == 200
    assert [r["decision"] for r in again["results"]] == ["DUPLICATE"] * 4
    assert [r["eb_ref"] for r in again["results"]] == [r["eb_ref"] for r in first["results"]]
    dup = await get_object(ig.settings, again["results"][0]["receipt_ref"])
    assert dup["decision"] == "DUPLICATE" and dup["eb_ref"]["offset"] == first["results"][0]["eb_ref"]["offset"]
    assert dup["evidence_refs"][0]["ref"] == first["results"][0]["receipt_ref"]

    changed = json.loads(json.dumps(events[0]))
    changed["payload"]["amount"] = 999.0
    status, single, _ = await push(http, ig, changed)  # a single envelope (not a batch)
    assert status == 200
    assert single["decision"] == "QUARANTINE" and single["receipt"]["reason_codes"] == ["PAYLOAD_HASH_MISMATCH"]
    record = await get_object(ig.settings, single["receipt"]["evidence_refs"][0]["ref"])
    assert record["reason_codes"] == ["PAYLOAD_HASH_MISMATCH"] and "payload" not in record["envelope"]
    # Still exactly one record per event on the bus.
    records = await stream_records(ig.settings, ig.settings.streams.name("traffic_fraud"))
    assert sorted(env["event_id"] for _, env in records) == sorted(e["event_id"] for e in events)
    # The ops index lists every receipt of the event, oldest first.
    async with http.get(f"{ig.url}/v1/ops/lookup", params={"event_id": events[0]["event_id"], "platform_run_id": run},
                        headers=ig.headers()) as resp:
        matches = (await resp.json())["matches"]
    assert [m["decision"] for m in matches] == ["ADMIT", "DUPLICATE", "QUARANTINE"], matches
    assert matches[0]["receipt_id"] == first["results"][0]["receipt_id"]
    assert matches[2]["reason_codes"] == ["PAYLOAD_HASH_MISMATCH"]
    m = ig.service.metrics()
    assert m["duplicate_total"] == 4 and m["quarantine_reason_PAYLOAD_HASH_MISMATCH_total"] == 1


async def test_malformed_envelopes_and_missing_pins_are_quarantined_without_payload(
        ig: RunningIg, http: aiohttp.ClientSession) -> None:
    run = ig.run_id
    marker = "PAYLOAD-MARKER-" + uuid.uuid4().hex
    no_run_id = traffic(run, 1)
    del no_run_id["run_id"]
    no_run_id["payload"]["note"] = marker
    unknown_field = traffic(run, 2, surprise=marker)
    no_version = decision(run)
    del no_version["schema_version"]
    bad_type = traffic(run, 3)
    bad_type["payload"]["flow_id"] = marker
    events: list[Any] = [42, {"event_id": "only"}, no_run_id, unknown_field, no_version, bad_type,
                         traffic(run, 4, event_type="what_is_this"), traffic(run, 5)]
    status, body, _ = await push(http, ig, {"events": events})
    assert status == 200, body
    got = [(r["decision"], r.get("reason_codes", [])) for r in body["results"]]
    assert got == [("QUARANTINE", ["ENVELOPE_INVALID"]), ("QUARANTINE", ["ENVELOPE_INVALID"]),
                   ("QUARANTINE", ["PINS_MISSING"]), ("QUARANTINE", ["ENVELOPE_INVALID"]),
                   ("QUARANTINE", ["SCHEMA_VERSION_REQUIRED"]), ("QUARANTINE", ["SCHEMA_FAIL"]),
                   ("QUARANTINE", ["SCHEMA_POLICY_MISSING"]), ("ADMIT", [])]
    for res in body["results"][:-1]:
        receipt = await get_object(ig.settings, res["receipt_ref"])
        record_ref = receipt["evidence_refs"][0]["ref"]
        record = await get_object(ig.settings, record_ref)
        assert "payload" not in record.get("envelope", {})
        assert marker not in json.dumps(record) and marker not in json.dumps(receipt)
        assert record["reason_codes"] == res["reason_codes"] and record["detail"]
    # Readable run ids keep evidence under the event's run; unreadable input under IG's own run.
    assert f"/{run}/ig/quarantine/" in (await get_object(ig.settings, body["results"][2]["receipt_ref"])
                                         )["evidence_refs"][0]["ref"]
    no_run = await get_object(ig.settings, body["results"][0]["receipt_ref"])
    assert no_run["platform_run_id"] == ig.run_id
    records = await stream_records(ig.settings, ig.settings.streams.name("traffic_fraud"))
    assert [env["event_id"] for _, env in records] == [events[-1]["event_id"]]


async def test_batch_receipts_layout_indexes_one_object_per_batch(private_streams: Settings,
                                                                 http: aiohttp.ClientSession) -> None:
    from fraudrt.config import load_settings

    settings = load_settings("embedded", env={**os.environ, "FRAUDRT_STREAM_PREFIX": private_streams.streams.prefix,
                                              "IG_RECEIPTS_LAYOUT": "batch"})
    async with running_ig(settings, new_run_id()) as ig:
        events = [traffic(ig.run_id, i) for i in range(5)]
        _, body, _ = await push(http, ig, {"events": [*events, {"bad": 1}]})
        refs = {r["receipt_ref"] for r in body["results"]}
        assert len(refs) == 1 and "/ig/receipts/batches/" in refs.pop()
        batch = await get_object(ig.settings, body["results"][0]["receipt_ref"])
        assert sorted(r["receipt_id"] for r in batch["receipts"]) == sorted(r["receipt_id"] for r in body["results"])
        by_id = {r["receipt_id"]: r for r in batch["receipts"]}
        assert by_id[body["results"][0]["receipt_id"]]["eb_ref"] == body["results"][0]["eb_ref"]
        async with http.get(f"{ig.url}/v1/ops/lookup", params={"event_id": events[2]["event_id"]},
                            headers=ig.headers()) as resp:
            match = (await resp.json())["matches"][0]
        assert match["batch_id"] == batch["batch_id"] and match["receipt_ref"] == body["results"][2]["receipt_ref"]


# ---------------------------------------------------------------- HTTP contract


async def test_auth_contract_and_health(ig: RunningIg, http: aiohttp.ClientSession) -> None:
    for method, path in (("GET", "/v1/ops/health"), ("POST", "/v1/ingest/push"), ("GET", "/v1/ops/lookup")):
        for headers in ({}, {"X-IG-Api-Key": "wrong"}, {"X-IG-Api-Key": ""}):
            async with http.request(method, f"{ig.url}{path}", headers=headers, data=b"{}") as resp:
                assert resp.status == 401, (method, path, headers)
                assert await resp.json() == {"error": "UNAUTHORIZED"}
    async with http.get(f"{ig.url}/v1/ops/health", headers=ig.headers()) as resp:
        assert resp.status == 200
        health = await resp.json()
    assert health["state"] == "GREEN", health
    async with http.get(f"{ig.url}/v1/openapi.json") as resp:  # unauthenticated by design
        assert resp.status == 200 and (await resp.json())["openapi"].startswith("3.")
    async with http.get(f"{ig.url}/v1/ops/lookup", headers=ig.headers()) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "MISSING_QUERY"


async def test_malformed_json_400_and_oversize_413(private_streams: Settings, http: aiohttp.ClientSession) -> None:
    from fraudrt.config import load_settings

    settings = load_settings("embedded", env={**os.environ, "FRAUDRT_STREAM_PREFIX": private_streams.streams.prefix,
                                              "FRAUDRT__IG__MAX_BODY_BYTES": "4096",
                                              "FRAUDRT__IG__MAX_BATCH_EVENTS": "3"})
    async with running_ig(settings, new_run_id()) as ig:
        status, body, _ = await push(http, ig, None, raw=b'{"events": [')
        assert status == 400 and body["error"] == "MALFORMED_JSON" and body["detail"]
        status, body, _ = await push(http, ig, [1, 2])
        assert status == 400 and body["error"] == "BODY_NOT_OBJECT"
        status, body, _ = await push(http, ig, {"events": {"not": "a list"}})
        assert status == 400 and body["error"] == "EVENTS_NOT_A_LIST"
        status, body, _ = await push(http, ig, None, raw=b'{"events": ["' + b"x" * 5000 + b'"]}')
        assert status == 413 and body["error"] == "BODY_TOO_LARGE" and "4096" in body["detail"]
        status, body, _ = await push(http, ig, {"events": [1, 2, 3, 4]})
        assert status == 413 and body["error"] == "BATCH_TOO_LARGE"
        status, body, _ = await push(http, ig, {"events": []})
        assert status == 200 and body["results"] == []


async def test_stop_drains_in_flight_pushes_and_logs_summary(private_streams: Settings, http: aiohttp.ClientSession,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="fraudrt.ingestion_gate")
    async with running_ig(private_streams, new_run_id(), options={"summary_interval_seconds": 0.2}) as ig:
        assert ig.ctx is not None
        events = [traffic(ig.run_id, i) for i in range(500)]
        pushing = asyncio.create_task(push(http, ig, {"events": events}))
        await asyncio.sleep(0.05)  # the push is in flight ...
        ig.ctx.stopping.set()  # ... when the stop arrives
        status, body, _ = await pushing
        assert status == 200 and body["admit"] == 500
        await asyncio.sleep(0)
    assert any("IG summary admit=500 duplicate=0 quarantine=0" in r.getMessage() for r in caplog.records)
    assert any(r.getMessage() == "IG stopped" for r in caplog.records)


# ---------------------------------------------------------------- Postgres down


async def test_postgres_down_answers_503_then_recovers(private_streams: Settings,
                                                      http: aiohttp.ClientSession) -> None:
    dsn = private_streams.postgres.dsn
    assert dsn
    parts = urlsplit(dsn)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.restore()
    proxied = dsn.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    async with running_ig(private_streams, new_run_id(), dsn=proxied, options={"db_timeout_seconds": 2}) as ig:
        events = [traffic(ig.run_id, i) for i in range(3)]
        await proxy.cut()
        started = time.monotonic()
        status, body, headers = await push(http, ig, {"events": events})
        assert status == 503, body
        assert body["error"] == "OPS_DB_UNHEALTHY" and int(headers["Retry-After"]) >= 1
        assert time.monotonic() - started < 5
        async with http.get(f"{ig.url}/v1/ops/health", headers=ig.headers()) as resp:
            health = await resp.json()
        assert health["state"] == "RED" and "OPS_DB_UNHEALTHY" in health["reasons"]
        # Nothing half-written: the bus has no record of the refused push.
        assert await stream_records(ig.settings, ig.settings.streams.name("traffic_fraud")) == []
        await proxy.restore()
        for _ in range(50):
            status, body, _ = await push(http, ig, {"events": events})
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200, body
        assert [r["decision"] for r in body["results"]] == ["ADMIT"] * 3
        records = await stream_records(ig.settings, ig.settings.streams.name("traffic_fraud"))
        assert sorted(e["event_id"] for _, e in records) == sorted(e["event_id"] for e in events)
        await asyncio.sleep(0.5)
        assert ig.service.health()[0] == "GREEN"
    await proxy.cut()


async def test_object_store_down_answers_503_and_the_retry_admits(private_streams: Settings,
                                                                 http: aiohttp.ClientSession) -> None:
    proxy, through = via_proxy(private_streams, "S3_ENDPOINT_URL", private_streams.s3.endpoint_url)
    await proxy.restore()
    async with running_ig(through(proxy.port), new_run_id()) as ig:
        events = [traffic(ig.run_id, i) for i in range(3)]
        await proxy.cut()
        status, body, headers = await push(http, ig, {"events": events})
        assert status == 503 and body["error"] == "OBJECT_STORE_UNHEALTHY", body
        assert int(headers["Retry-After"]) >= 1
        stream = ig.settings.streams.name("traffic_fraud")
        # Published before the receipt write failed: on the bus, but not indexed, not answered ADMIT.
        assert len(await stream_records(ig.settings, stream)) == 3
        async with http.get(f"{ig.url}/v1/ops/lookup", params={"event_id": events[0]["event_id"]},
                            headers=ig.headers()) as resp:
            assert (await resp.json())["matches"] == []
        await proxy.restore()
        status, body, _ = await push(http, ig, {"events": events})  # the producer's retry, unchanged
        assert status == 200 and [r["decision"] for r in body["results"]] == ["ADMIT"] * 3, body
        records = {seq: env for seq, env in await stream_records(ig.settings, stream)}
        assert len(records) == 6  # re-published: a duplicate on the bus (consumers dedupe), never a gap
        for env, res in zip(events, body["results"], strict=True):
            assert records[res["eb_ref"]["offset"]]["event_id"] == env["event_id"]
            assert (await get_object(private_streams, res["receipt_ref"]))["eb_ref"] == res["eb_ref"]
        _, again, _ = await push(http, ig, {"events": events})
        assert [r["decision"] for r in again["results"]] == ["DUPLICATE"] * 3
    await proxy.cut()


async def test_bus_down_answers_503_no_receipt_and_the_retry_admits(private_streams: Settings,
                                                        http: aiohttp.ClientSession) -> None:
    proxy, through = via_proxy(private_streams, "KINESIS_ENDPOINT_URL", private_streams.kinesis.endpoint_url)
    await proxy.restore()
    async with running_ig(through(proxy.port), new_run_id(), options={"publish_budget_seconds": 1.0}) as ig:
        events = [traffic(ig.run_id, i) for i in range(3)]
        await proxy.cut()
        status, body, headers = await push(http, ig, {"events": events})
        assert status == 503 and body["error"] == "BUS_UNHEALTHY", body
        assert int(headers["Retry-After"]) >= 1
        assert ig.service.metrics()["admit_total"] == 0
        async with http.get(f"{ig.url}/v1/ops/lookup", params={"event_id": events[0]["event_id"]},
                            headers=ig.headers()) as resp:
            assert (await resp.json())["matches"] == []
        await proxy.restore()
        status, body, _ = await push(http, ig, {"events": events})
        assert status == 200 and [r["decision"] for r in body["results"]] == ["ADMIT"] * 3, body
        records = await stream_records(private_streams, ig.settings.streams.name("traffic_fraud"))
        assert sorted(e["event_id"] for _, e in records) == sorted(e["event_id"] for e in events)
    await proxy.cut()


# ---------------------------------------------------------------- concurrency


async def test_concurrent_pushes_of_the_same_events_publish_once(ig: RunningIg, http: aiohttp.ClientSession) -> None:
    events = [traffic(ig.run_id, i) for i in range(50)]
    answers = await asyncio.gather(*(push(http, ig, {"events": events}) for _ in range(4)))
    assert all(status == 200 for status, _, _ in answers), answers
    per_event = list(zip(*[[r["decision"] for r in body["results"]] for _, body, _ in answers], strict=True))
    assert all(sorted(d) == ["ADMIT", "DUPLICATE", "DUPLICATE", "DUPLICATE"] for d in per_event)
    offsets = {tuple(r["eb_ref"]["offset"] for r in body["results"]) for _, body, _ in answers}
    assert len(offsets) == 1  # every answer carries the same eb_ref per event
    records = await stream_records(ig.settings, ig.settings.streams.name("traffic_fraud"))
    assert len(records) == len(events)


async def test_second_instance_waits_for_the_claimant(private_streams: Settings, http: aiohttp.ClientSession) -> None:
    """Two IG instances (as two processes would be): the loser of the claim answers DUPLICATE."""
    run = new_run_id()
    async with running_ig(private_streams, run) as a, running_ig(private_streams, run) as b:
        events = [traffic(run, i) for i in range(200)]
        (sa, ba, _), (sb, bb, _) = await asyncio.gather(push(http, a, {"events": events}),
                                                        push(http, b, {"events": events}))
        assert (sa, sb) == (200, 200), (ba, bb)
        decisions = [sorted([x["decision"], y["decision"]]) for x, y in zip(ba["results"], bb["results"], strict=True)]
        assert all(d == ["ADMIT", "DUPLICATE"] for d in decisions)
        records = await stream_records(private_streams, private_streams.streams.name("traffic_fraud"))
        assert len(records) == len(events)


# ---------------------------------------------------------------- crash between publish and commit


@pytest.mark.chaos
async def test_crash_between_publish_and_commit_heals_on_restart(private_streams: Settings,
                                                                 http: aiohttp.ClientSession) -> None:
    run = new_run_id()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = ig_api_key(private_streams)
    target = RunningIg(None, url, key, private_streams, run)  # type: ignore[arg-type]
    events = [traffic(run, i) for i in range(5)]
    proc = serve_ig(private_streams, run, port, {CRASH_HOOK_ENV: "exit"})
    try:
        await wait_up(http, url, key, proc)
        with pytest.raises(aiohttp.ClientError):
            await push(http, target, {"events": events})
        assert proc.wait(10) == 86  # died right after PutRecords, before receipts and commit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stream = private_streams.streams.name("traffic_fraud")
    first = await stream_records(private_streams, stream)
    assert sorted(e["event_id"] for _, e in first) == sorted(e["event_id"] for e in events)

    proc = serve_ig(private_streams, run, port, {})
    try:
        await wait_up(http, url, key, proc)
        matches: list[dict[str, Any]] = []
        for _ in range(100):  # the heal loop re-publishes PUBLISH_PENDING rows once their lease is over
            matches = []
            for e in events:
                async with http.get(f"{url}/v1/ops/lookup", params={"event_id": e["event_id"]},
                                    headers={"X-IG-Api-Key": key}) as resp:
                    matches.extend((await resp.json())["matches"])
            if len(matches) == len(events):
                break
            await asyncio.sleep(0.1)
        assert [m["decision"] for m in matches] == ["ADMIT"] * len(events), matches
        records = {seq: env for seq, env in await stream_records(private_streams, stream)}
        for m in matches:
            assert records[m["eb_offset"]]["event_id"] == m["event_id"]  # receipt points at a real record
            receipt = await get_object(private_streams, m["receipt_ref"])
            assert receipt["eb_ref"]["offset"] == m["eb_offset"]
        # Re-pushed by the producer after the crash: DUPLICATE with the healed eb_ref.
        status, body, _ = await push(http, target, {"events": events})
        assert status == 200
        assert [r["decision"] for r in body["results"]] == ["DUPLICATE"] * len(events)
        assert {r["eb_ref"]["offset"] for r in body["results"]} == {m["eb_offset"] for m in matches}
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


async def test_a_wrong_database_password_is_dependency_down_not_a_crash(settings: Any) -> None:
    """The health probe and every push treat a refused login like an unreachable server: 503, not 500."""
    from fraudrt.control_ingress.ingestion_gate._errors import DependencyDown
    from fraudrt.control_ingress.ingestion_gate._store import AdmissionStore

    parts = urlsplit(settings.postgres.dsn)
    wrong = settings.postgres.dsn.replace(f":{parts.password}@", ":not-the-password@")
    pool = await asyncpg.create_pool(wrong, min_size=0, max_size=1)
    try:
        with pytest.raises(DependencyDown) as caught:
            await AdmissionStore(pool, timeout=5).ping()
        assert caught.value.dependency == "ops_db"
        assert "not-the-password" not in str(caught.value)
    finally:
        await pool.close()
