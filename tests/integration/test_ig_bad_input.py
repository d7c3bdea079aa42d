"""Bad input against a live IG is never a 5xx: a 4xx, or a QUARANTINE receipt with its reason.

The cases a corpus of malformed pushes found (an event_id holding U+0000, a body nested ~1,000 deep,
an envelope over Kinesis' 1 MiB record limit, a NUL in a lookup), a pending admission over the limit
left by an older IG, a read-only database (a dependency state, so 503, not 500), and a property test
that throws arbitrary JSON-ish bodies at the HTTP handler.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fraudrt.config import Settings, project_root
from fraudrt.contracts import ig_dedupe_key, ig_receipt_id
from fraudrt.control_ingress.ingestion_gate import REASON_CODES

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from tests.support.harness import wait_for
from tests.support.hostile import MIB, hostile_event, nested
from tests.support.ig import (
    RunningIg,
    close_s3_clients,
    get_object,
    new_run_id,
    push,
    running_ig,
    stream_records,
    traffic,
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


async def _lookup(http: aiohttp.ClientSession, ig: RunningIg, **params: str) -> tuple[int, Any]:
    async with http.get(f"{ig.url}/v1/ops/lookup", params=params, headers=ig.headers()) as resp:
        return resp.status, await resp.json()


async def test_an_event_id_holding_nul_is_quarantined_with_its_evidence(ig: RunningIg,
                                                                        http: aiohttp.ClientSession) -> None:
    bad = traffic(ig.run_id, 1, event_id="evt\u0000" + uuid.uuid4().hex)
    good = traffic(ig.run_id, 2)
    status, body, _ = await push(http, ig, {"events": [bad, good]})
    assert status == 200, body
    assert [(r["decision"], r.get("reason_codes", [])) for r in body["results"]] == [
        ("QUARANTINE", ["ENVELOPE_INVALID"]), ("ADMIT", [])]
    receipt = await get_object(ig.settings, body["results"][0]["receipt_ref"])
    assert receipt["event_id"] == bad["event_id"]  # the evidence keeps the exact id
    record = await get_object(ig.settings, receipt["evidence_refs"][0]["ref"])
    assert "NUL" in record["detail"]
    status, found = await _lookup(http, ig, receipt_id=body["results"][0]["receipt_id"])
    assert status == 200 and [m["decision"] for m in found["matches"]] == ["QUARANTINE"]
    # A single envelope too, and nothing of it on the bus.
    status, single, _ = await push(http, ig, bad)
    assert status == 200 and single["decision"] == "QUARANTINE", single
    records = await stream_records(ig.settings, ig.settings.streams.name("traffic_fraud"))
    assert [e["event_id"] for _, e in records] == [good["event_id"]]


async def test_a_body_nested_too_deep_to_split_is_a_400(ig: RunningIg, http: aiohttp.ClientSession) -> None:
    env = traffic(ig.run_id, 1)
    env["payload"]["deep"] = "@DEEP@"
    for depth in (1_000, 100_000):
        deep = nested(depth)
        for body in (json.dumps(env), json.dumps({"events": [env]})):
            status, answer, _ = await push(http, ig, None, raw=body.replace('"@DEEP@"', deep).encode())
            assert status == 400 and answer["error"] == "NESTING_TOO_DEEP", (depth, answer)
    assert ig.service.health()[0] == "GREEN"


async def test_an_envelope_over_the_record_limit_is_quarantined_and_the_bus_stays_green(
        ig: RunningIg, http: aiohttp.ClientSession) -> None:
    big = traffic(ig.run_id, 1)
    big["payload"]["note"] = "x" * (MIB + 10)
    good = traffic(ig.run_id, 2)
    status, body, _ = await push(http, ig, {"events": [big, good]})
    assert status == 200, body
    assert [(r["decision"], r.get("reason_codes", [])) for r in body["results"]] == [
        ("QUARANTINE", ["EVENT_TOO_LARGE"]), ("ADMIT", [])]
    record = await get_object(ig.settings, (await get_object(ig.settings, body["results"][0]["receipt_ref"]))[
        "evidence_refs"][0]["ref"])
    assert record["reason_codes"] == ["EVENT_TOO_LARGE"] and "payload" not in record["envelope"]
    records = await stream_records(ig.settings, ig.settings.streams.name("traffic_fraud"))
    assert [e["event_id"] for _, e in records] == [good["event_id"]]
    await asyncio.sleep(0.5)  # a probe round
    assert ig.service.health() == ("GREEN", [])


async def test_a_pending_admission_over_the_limit_left_by_an_older_ig_is_quarantined_not_retried(
        private_streams: Settings, http: aiohttp.ClientSession) -> None:
    """An IG before the record limit claimed an oversized envelope and died: the heal used to
    re-publish it forever (a 503 each time, a RED bus). It is quarantined once, and its row goes."""
    run = new_run_id()
    env = traffic(run, 1)
    env["payload"]["note"] = "x" * (MIB + 10)
    data = json.dumps(env, separators=(",", ":")).encode()
    key = ig_dedupe_key(run, "traffic_fraud", env["event_id"])
    token = uuid.uuid4().hex
    conn = await asyncpg.connect(private_streams.postgres.dsn)
    try:
        async with running_ig(private_streams, run) as ig:  # also applies the migrations
            await conn.execute(
                "INSERT INTO ig_admissions (dedupe_key, platform_run_id, event_class, event_id, event_type, "
                "payload_hash, state, stream, partition_key, profile_id, receipt_id, data, claim_token, claimed_by) "
                "VALUES ($1, $2, 'traffic_fraud', $3, $4, 'h', 'PUBLISH_PENDING', $5, $6, 'p', $7, $8, $9, "
                "'ig@a-host-gone/1.deadbeef')",
                key, run, env["event_id"], env["event_type"], ig.settings.streams.name("traffic_fraud"),
                hashlib.sha256(b"1").hexdigest(), ig_receipt_id("ADMIT", env["event_id"]), data, token)
            await conn.execute("INSERT INTO ig_claims (claim_token, claimed_by, dedupe_keys, keys_total) "
                               "VALUES ($1, 'ig@a-host-gone/1.deadbeef', $2, 1)", token, [key])

            async def quarantined() -> Any:
                return await conn.fetchrow("SELECT reason_code, record_ref FROM ig_quarantines "
                                           "WHERE platform_run_id = $1 AND event_id = $2", run, env["event_id"])

            found = await wait_for(quarantined, lambda row: row is not None, timeout=30,
                                   what="the heal to quarantine the oversized pending admission")
            assert found["reason_code"] == "EVENT_TOO_LARGE"
            assert await conn.fetchval("SELECT count(*) FROM ig_admissions WHERE dedupe_key = $1", key) == 0
            assert await conn.fetchval("SELECT count(*) FROM ig_claims WHERE $1 = ANY(dedupe_keys)", key) == 0
            assert (await get_object(ig.settings, found["record_ref"]))["reason_codes"] == ["EVENT_TOO_LARGE"]
            assert await stream_records(ig.settings, ig.settings.streams.name("traffic_fraud")) == []
            assert ig.service.health() == ("GREEN", [])
    finally:
        await conn.close()


async def test_a_lookup_with_nul_or_an_overlong_value_is_a_400(ig: RunningIg, http: aiohttp.ClientSession) -> None:
    for params in ({"receipt_id": "ab\u0000cd"}, {"event_id": "\u0000"}, {"event_id": "e", "platform_run_id": "\u0000"},
                   {"event_id": "x" * 257}):
        status, answer = await _lookup(http, ig, **params)
        assert status == 400 and answer["error"] == "INVALID_QUERY", (params, answer)
    status, answer = await _lookup(http, ig, event_id="x" * 256)
    assert status == 200 and answer == {"matches": []}


async def test_a_read_only_database_is_a_503_with_retry_after_not_a_500(private_streams: Settings,
                                                                       http: aiohttp.ClientSession) -> None:
    """A standby, or a primary being demoted, refuses writes (SQLSTATE 25006): a dependency state,
    answered like any outage, never as a bug and never by quarantining the events."""
    async with running_ig(private_streams, new_run_id(),
                          server_settings={"default_transaction_read_only": "on"}) as ig:
        status, body, headers = await push(http, ig, {"events": [traffic(ig.run_id, 1)]})
        assert status == 503, body
        assert body["error"] == "OPS_DB_UNHEALTHY" and "25006" in body["detail"]
        assert int(headers["Retry-After"]) >= 1
        assert ig.service.metrics()["quarantine_total"] == 0


# ---------------------------------------------------------------- arbitrary input

@st.composite
def _bodies(draw: st.DrawFn, run: str) -> bytes:
    kind = draw(st.sampled_from(["single", "batch", "batch", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=60))
    if kind == "single":
        return draw(hostile_event(lambda: traffic(run, 1))).encode()
    events = draw(st.lists(hostile_event(lambda: traffic(run, 1)), max_size=4))
    return ('{"events": [' + ", ".join(events) + "]}").encode()




@hsettings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_arbitrary_bodies_never_get_a_5xx(ig: RunningIg, http: aiohttp.ClientSession, data: Any) -> None:
    body = data.draw(_bodies(ig.run_id))
    status, answer, _ = await push(http, ig, None, raw=body)
    assert status < 500, (body[:300], answer)
    assert status in (200, 400, 413), (status, answer)
    if status == 200:
        results = answer["results"] if "results" in answer else [
            {"decision": answer["decision"], "reason_codes": answer["receipt"].get("reason_codes", [])}]
        for r in results:
            assert r["decision"] in ("ADMIT", "DUPLICATE", "QUARANTINE"), r
            assert set(r.get("reason_codes") or []) <= {*REASON_CODES, "DUPLICATE"}, r
