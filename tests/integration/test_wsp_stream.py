"""WSP streaming on the embedded substrate against a tiny in-process IG stand-in.

The stand-in (`FakeIg`) speaks IG's batch contract: `POST /v1/ingest/push` with `{"events": [...]}`,
200 with per-event `results` (ADMIT first time, DUPLICATE after), and can fail or reject on demand.
"""

from __future__ import annotations

import bisect
import json
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web as web
import anyio
import msgspec
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import decode_envelope, engine_event_id
from fraudrt.control_ingress.scenario_runner import ReadyPayload, sr_ready
from fraudrt.control_ingress.world_stream_producer import (
    SQL_PACKAGE,
    RetryPolicy,
    StreamRequest,
    WorldStreamProducer,
    WspStats,
    load_checkpoints,
    stream_ready_run,
)
from fraudrt.engine import load_catalogue
from fraudrt.runtime.packs import apply_migrations
from tests.integration.test_sr_ready import FRAUD_OUTPUTS, World, control_messages, oracle_world, ready_request
from tests.support.harness import create_streams, make_scope, open_pool

pytestmark = pytest.mark.integration


@dataclass
class FakeIg:
    """IG's push contract in ~30 lines. `fail_first` requests get `fail_status` (+ Retry-After);
    from request `reject_from` on, every request gets `reject_status`."""

    fail_first: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    reject_from: int | None = None
    reject_status: int = 400
    stall_event_ids: frozenset[str] = frozenset()  # a request carrying one of these gets 503 + Retry-After ...
    stall_times: int = 0  # ... this many times
    stalled: int = 0
    requests: int = 0
    request_times: list[float] = field(default_factory=list)
    admitted: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    api_keys: set[str | None] = field(default_factory=set)
    on_request: Any = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.request_times.append(time.monotonic())
        self.api_keys.add(request.headers.get("X-IG-Api-Key"))
        if self.on_request is not None:
            self.on_request(self)
        if self.requests <= self.fail_first:
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.json_response({"error": "IG_UNHEALTHY"}, status=self.fail_status, headers=headers)
        if self.reject_from is not None and self.requests >= self.reject_from:
            return web.json_response({"error": "BAD_REQUEST", "detail": "rejected by test"},
                                     status=self.reject_status)
        body = await request.json()
        if self.stalled < self.stall_times and any(e["event_id"] in self.stall_event_ids for e in body["events"]):
            self.stalled += 1
            return web.json_response({"error": "IG_UNHEALTHY"}, status=503, headers={"Retry-After": "1"})
        seen = {e["event_id"] for e in self.admitted}
        results = []
        for i, raw in enumerate(body["events"]):
            env = decode_envelope(raw)  # WSP must send canonical envelopes
            decision = "DUPLICATE" if env.event_id in seen else "ADMIT"
            if decision == "ADMIT":
                self.admitted.append(raw)
                seen.add(env.event_id)
            self.decisions.append(decision)
            results.append({"index": i, "decision": decision, "receipt_id": uuid.uuid4().hex, "receipt_ref": "x",
                            "event_id": env.event_id})
        return web.json_response({"results": results, "admit": 0, "duplicate": 0, "quarantine": 0})


@pytest.fixture
async def fake_ig() -> AsyncIterator[FakeIg]:
    ig = FakeIg()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/ingest/push", ig.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    ig.url = f"http://{host}:{port}"
    try:
        yield ig
    finally:
        await runner.cleanup()


@dataclass
class Prepared:
    settings: Settings
    run_id: str
    world: World
    ready: ReadyPayload
    pool: Any


async def prepare(substrate: Any, tmp_path: Path, pool: Any, **world_kw: Any) -> Prepared:
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, ["control"])
    world = await oracle_world(scope.settings, tmp_path / "world", **world_kw)
    await sr_ready(scope.settings, ready_request(scope.run_id, world, f"k_{uuid.uuid4().hex[:8]}"))
    (msg,) = await control_messages(scope.settings)
    return Prepared(scope.settings, scope.run_id, world, msg.payload, pool)


@pytest.fixture(scope="module")
async def pool(settings: Settings) -> AsyncIterator[Any]:
    async with open_pool(settings) as p:
        async with p.acquire() as conn:
            await apply_migrations(conn, SQL_PACKAGE)
        yield p


def request_for(p: Prepared, ig: FakeIg, **kw: Any) -> StreamRequest:
    defaults: dict[str, Any] = {"push_batch_size": 5,
                                "retry": RetryPolicy(base_delay=0.05, max_delay=0.2)}
    return StreamRequest(message_id=p.ready.message_id, platform_run_id=p.run_id, ready=p.ready, ig_url=ig.url,
                         **{**defaults, **kw})


def expected_order(world: World) -> list[tuple[str, str]]:
    """(output_id, event_id) in (ts_utc, output rank) order: the one merged clock."""
    catalogue = load_catalogue()
    pins = {"manifest_fingerprint": world.manifest_fingerprint, "parameter_hash": world.parameter_hash,
            "seed": world.seed, "scenario_id": world.scenario_id}
    keyed = []
    for rank, output_id in enumerate(FRAUD_OUTPUTS):
        pk = catalogue.output(output_id).primary_key
        for n, row in enumerate(world.rows[output_id]):
            keyed.append((row["ts_utc"], rank, n, output_id, engine_event_id(output_id, row, pk, pins)))
    return [(oid, eid) for *_k, oid, eid in sorted(keyed)]


def assert_order_at_ig(admitted: list[dict[str, Any]], world: World, window: float) -> None:
    """What WSP promises about order: all of the world once, each output in its view's order, and no
    event before every event more than `window` seconds older (of any output) had reached IG."""
    from fraudrt.contracts import parse_ts_utc

    got = [(e["event_type"], e["event_id"]) for e in admitted]
    expected = expected_order(world)
    assert sorted(got) == sorted(expected) and len(set(got)) == len(got)
    for output_id in FRAUD_OUTPUTS:
        assert [e for o, e in got if o == output_id] == [e for o, e in expected if o == output_id], output_id
    times = {e["event_id"]: parse_ts_utc(e["ts_utc"]).timestamp() for e in admitted}
    by_time = sorted(times.values())
    for n, (_output, event_id) in enumerate(got):
        # Events more than `window` older than this one: all must be among the n that arrived before it.
        older = bisect.bisect_left(by_time, times[event_id] - window)
        arrived_older = sum(1 for _o, e in got[:n] if times[e] < times[event_id] - window)
        assert arrived_older == older, f"event {n} ({event_id}) reached IG before {older - arrived_older} " \
                                       f"events more than {window:.3f}s older"


# ------------------------------------------------------------------------------------------- tests


async def test_streams_every_output_in_view_order_within_the_window(substrate: Any, tmp_path: Path, pool: Any,
                                                        fake_ig: FakeIg, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fraudrt.world_stream_producer")
    p = await prepare(substrate, tmp_path, pool)
    stats = WspStats()

    result = await stream_ready_run(p.settings, pool, request_for(p, fake_ig), stats, anyio.Event())

    assert result.status == "STREAMED", result.reason
    assert_order_at_ig(fake_ig.admitted, p.world, request_for(p, fake_ig).order_window_seconds)
    assert fake_ig.decisions.count("DUPLICATE") == 0
    last_traffic = [e for e in fake_ig.admitted if e["event_type"] == "s3_event_stream_with_fraud_6B"][-1]
    env = decode_envelope(json.dumps(last_traffic))
    assert env.producer == "svc:world_stream_producer" and env.platform_run_id == p.run_id
    assert env.scenario_run_id == p.ready.scenario_run_id and env.run_id == p.world.engine_run_id
    assert env.seed == p.world.seed and env.schema_version == "v1" and env.payload["event_seq"] in (0, 1)
    counts = {oid: len(rows) for oid, rows in p.world.rows.items()}
    assert result.emitted == counts and stats.emitted == counts
    async with pool.acquire() as conn:
        cps = await load_checkpoints(conn, p.run_id, p.ready.scenario_run_id)
    assert {oid: cp.emitted for oid, cp in cps.items()} == counts
    assert {oid: cp.position.part_index for oid, cp in cps.items()} == {oid: len(p.world.parts[oid])
                                                                       for oid in FRAUD_OUTPUTS}
    text = caplog.text
    assert "WSP stream start" in text and "WSP stream stop" in text
    for oid, n in counts.items():
        assert f"output_id={oid} emitted={n}" in text


async def test_cap_stops_each_output_at_exactly_n(substrate: Any, tmp_path: Path, pool: Any,
                                                  fake_ig: FakeIg) -> None:
    p = await prepare(substrate, tmp_path, pool, n_flows=20)
    stats = WspStats()
    result = await stream_ready_run(p.settings, pool, request_for(p, fake_ig, max_events_per_output=7,
                                                                  push_batch_size=3),
                                    stats, anyio.Event())
    assert result.status == "STREAMED"
    per_output: dict[str, int] = {}
    for e in fake_ig.admitted:
        per_output[e["event_type"]] = per_output.get(e["event_type"], 0) + 1
    assert per_output == dict.fromkeys(FRAUD_OUTPUTS, 7)
    assert result.emitted == dict.fromkeys(FRAUD_OUTPUTS, 7)
    # The 7 of each output are its first 7 rows (a cap is a prefix of the view, not a sample).
    expected = [x for x in expected_order(p.world)]
    firsts = {oid: [eid for o, eid in expected if o == oid][:7] for oid in FRAUD_OUTPUTS}
    assert {oid: [e["event_id"] for e in fake_ig.admitted if e["event_type"] == oid] for oid in FRAUD_OUTPUTS} \
        == firsts

    # A second call with the same cap has nothing left to send.
    again = await stream_ready_run(p.settings, pool, request_for(p, fake_ig, max_events_per_output=7),
                                   WspStats(), anyio.Event())
    assert again.emitted == dict.fromkeys(FRAUD_OUTPUTS, 7)
    assert len(fake_ig.decisions) == 28


async def test_restart_resumes_from_checkpoint_without_rereading_from_the_start(
        substrate: Any, tmp_path: Path, pool: Any, fake_ig: FakeIg) -> None:
    p = await prepare(substrate, tmp_path, pool, n_flows=30, rows_per_part=8, row_group_rows=3)
    stopping = anyio.Event()

    def stop_after_four(ig: FakeIg) -> None:
        if ig.requests == 4:
            stopping.set()  # a drain request (SIGTERM) arriving mid-stream

    fake_ig.on_request = stop_after_four
    first = await stream_ready_run(p.settings, pool, request_for(p, fake_ig), WspStats(), stopping)
    assert first.status == "STOPPED"
    sent_first = len(fake_ig.decisions)
    assert 0 < sent_first < 150
    async with pool.acquire() as conn:
        cps = await load_checkpoints(conn, p.run_id, p.ready.scenario_run_id)
    assert sum(cp.emitted for cp in cps.values()) == sent_first == sum(first.emitted.values())
    for oid, cp in cps.items():  # the checkpoint names the part file it points into
        parts = p.world.parts[oid]
        assert cp.part_uri == (parts[cp.position.part_index] if cp.position.part_index < len(parts) else None)

    fake_ig.on_request = None
    stats = WspStats()
    second = await stream_ready_run(p.settings, pool, request_for(p, fake_ig), stats, anyio.Event())
    assert second.status == "STREAMED"
    counts = {oid: len(rows) for oid, rows in p.world.rows.items()}
    assert second.emitted == counts
    # Every event exactly once at IG, each output in order across the restart, nothing re-pushed.
    assert_order_at_ig(fake_ig.admitted, p.world, request_for(p, fake_ig).order_window_seconds)
    assert fake_ig.decisions.count("DUPLICATE") == 0
    # Only the parts from each checkpoint on were opened, and rows before the checkpoint's row group
    # were never decoded.
    assert stats.source.parts_opened == sum(len(p.world.parts[oid]) - cps[oid].position.part_index
                                            for oid in FRAUD_OUTPUTS if oid in cps) \
        + sum(len(p.world.parts[oid]) for oid in FRAUD_OUTPUTS if oid not in cps)
    remaining = sum(counts.values()) - sent_first
    assert remaining <= stats.source.rows_decoded <= remaining + 3 * len(FRAUD_OUTPUTS)


async def test_retries_503_honouring_retry_after_then_delivers(substrate: Any, tmp_path: Path, pool: Any,
                                                               fake_ig: FakeIg) -> None:
    p = await prepare(substrate, tmp_path, pool, n_flows=4)
    fake_ig.fail_first, fake_ig.retry_after = 2, "1"
    stats = WspStats()
    result = await stream_ready_run(p.settings, pool, request_for(p, fake_ig, push_batch_size=100), stats,
                                    anyio.Event())
    assert result.status == "STREAMED"
    # One batch per output (its lane); the first two requests got the 503 and were retried once each.
    assert fake_ig.requests == 4 + 2 and stats.push.retries == 2
    # Our own backoff is 0.05-0.2 s here: only Retry-After explains a >= 1 s gap.
    times = fake_ig.request_times
    assert min(times[4:]) - max(times[:2]) >= 0.95, times
    assert len(fake_ig.admitted) == sum(len(r) for r in p.world.rows.values())
    assert stats.push.retry_statuses == {"503": 2}


async def test_a_400_stops_the_stream_and_keeps_what_was_acknowledged(substrate: Any, tmp_path: Path, pool: Any,
                                                                     fake_ig: FakeIg) -> None:
    p = await prepare(substrate, tmp_path, pool, n_flows=10)
    fake_ig.reject_from = 3
    stats = WspStats()
    result = await stream_ready_run(p.settings, pool, request_for(p, fake_ig), stats, anyio.Event())
    assert result.status == "FAILED" and result.reason is not None
    assert "IG_PUSH_REJECTED" in result.reason and "400" in result.reason
    # Lanes push side by side: requests 1-2 were admitted, every later one got the 400, none retried.
    assert fake_ig.requests >= 3 and stats.push.retries == 0 and len(fake_ig.admitted) == 10
    # What WSP saw acknowledged is checkpointed (a lane cancelled while its admitted answer was on the
    # way counts it as not acknowledged: re-sent on a later stream, IG answers DUPLICATE).
    async with pool.acquire() as conn:
        cps = await load_checkpoints(conn, p.run_id, p.ready.scenario_run_id)
    assert {oid: cp.emitted for oid, cp in cps.items() if cp.emitted} == {o: n for o, n in result.emitted.items() if n}
    assert 0 < sum(result.emitted.values()) <= 10


async def test_actor_records_ready_streams_it_and_turns_red_on_failure(substrate: Any, tmp_path: Path, pool: Any,
                                                                       fake_ig: FakeIg) -> None:
    """The pack path without the process: handle() records, stream_open_runs() streams, health reflects it."""
    from fraudrt.runtime import ComponentContext

    p = await prepare(substrate, tmp_path, pool, n_flows=3)
    settings = msgspec.structs.replace(p.settings, wsp=msgspec.structs.replace(p.settings.wsp, ig_url=fake_ig.url))
    actor = WorldStreamProducer()
    ctx = ComponentContext(settings=settings, platform_run_id=p.run_id, pack_id="test", pool=pool)
    from fraudrt.control_ingress.world_stream_producer import record_ready

    (msg,) = await control_messages(settings)
    async with pool.acquire() as conn:
        outcome = await record_ready(conn, msg, p.run_id)
    actor.note_outcome(outcome, msg.message_id, p.run_id)
    fake_ig.reject_from = 1
    results = await actor.stream_open_runs(ctx)
    assert [r.status for r in results] == ["FAILED"]
    state, reasons = actor.health()
    assert state == "RED" and "STREAM_FAILED" in reasons[0]
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, reason FROM wsp_ready_runs WHERE message_id = $1", msg.message_id)
    assert row["status"] == "FAILED" and "IG_PUSH_REJECTED" in row["reason"]
    assert actor.metrics()["streams_failed_total"] == 1
    # FAILED is terminal: nothing is picked up again.
    assert await actor.stream_open_runs(ctx) == []


async def test_speedup_paces_the_merged_clock(substrate: Any, tmp_path: Path, pool: Any, fake_ig: FakeIg) -> None:
    from fraudrt.contracts import parse_ts_utc

    p = await prepare(substrate, tmp_path, pool, n_flows=8)
    capped = [parse_ts_utc(row["ts_utc"]).timestamp() for oid in FRAUD_OUTPUTS for row in p.world.rows[oid][:5]]
    span = max(capped) - min(capped)
    assert span > 0
    speedup = span / 1.2  # the capped events' event-time span, replayed in ~1.2 s of wall time
    started = time.monotonic()
    result = await stream_ready_run(p.settings, pool, request_for(p, fake_ig, speedup=speedup, push_batch_size=100,
                                                                  max_events_per_output=5), WspStats(), anyio.Event())
    elapsed = time.monotonic() - started
    assert result.status == "STREAMED" and result.emitted == dict.fromkeys(FRAUD_OUTPUTS, 5)
    assert 1.1 <= elapsed < 6, elapsed
    # Events due later are not held back to fill a batch: several pushes spread over the replay.
    assert fake_ig.requests >= 3
    spread = fake_ig.request_times[-1] - fake_ig.request_times[0]
    assert spread >= 0.9, spread


async def test_drain_during_a_long_retry_after_stops_promptly(substrate: Any, tmp_path: Path, pool: Any,
                                                              fake_ig: FakeIg) -> None:
    p = await prepare(substrate, tmp_path, pool, n_flows=4)
    fake_ig.fail_first, fake_ig.retry_after = 1000, "30"
    stopping = anyio.Event()

    def drain_on_first(ig: FakeIg) -> None:
        if ig.requests == 1:
            stopping.set()

    fake_ig.on_request = drain_on_first
    started = time.monotonic()
    result = await stream_ready_run(p.settings, pool, request_for(p, fake_ig), WspStats(), stopping)
    assert result.status == "STOPPED"
    assert time.monotonic() - started < 10  # not the 30 s Retry-After
    assert sum(result.emitted.values()) == 0 and fake_ig.admitted == []


async def test_a_part_missing_from_the_store_fails_the_stream_instead_of_a_crash_loop(
        substrate: Any, tmp_path: Path, pool: Any, fake_ig: FakeIg) -> None:
    """A permanent read failure is a FAILED READY with its reason, not an exception the supervisor
    would restart forever."""
    from fraudrt.substrate import s3_client, split_s3_uri

    p = await prepare(substrate, tmp_path, pool, n_flows=10)
    bucket, key = split_s3_uri(p.world.parts["s3_event_stream_with_fraud_6B"][-1])
    async with s3_client(p.settings.s3) as s3:
        await s3.delete_object(Bucket=bucket, Key=key)
    result = await stream_ready_run(p.settings, pool, request_for(p, fake_ig), WspStats(), anyio.Event())
    assert result.status == "FAILED"
    assert result.reason is not None and "STREAM_VIEW_UNREADABLE" in result.reason


async def test_a_batch_stuck_in_retry_is_overtaken_by_no_later_event_of_its_output_and_others_wait_in_the_window(
        substrate: Any, tmp_path: Path, pool: Any, fake_ig: FakeIg) -> None:
    """One traffic batch gets 503 + Retry-After 1 s twice. Nothing of its output may reach IG before it
    (each output arrives in view order), and no other output may run more than the window ahead of it."""
    from fraudrt.contracts import parse_ts_utc

    p = await prepare(substrate, tmp_path, pool, n_flows=60, rows_per_part=40, row_group_rows=20)
    traffic = p.world.rows["s3_event_stream_with_fraud_6B"]
    catalogue = load_catalogue()
    pins = {"manifest_fingerprint": p.world.manifest_fingerprint, "parameter_hash": p.world.parameter_hash,
            "seed": p.world.seed, "scenario_id": p.world.scenario_id}
    stuck = engine_event_id("s3_event_stream_with_fraud_6B", traffic[len(traffic) // 3],
                            catalogue.output("s3_event_stream_with_fraud_6B").primary_key, pins)
    fake_ig.stall_event_ids, fake_ig.stall_times = frozenset({stuck}), 2
    stamps = sorted(parse_ts_utc(r["ts_utc"]).timestamp() for rows in p.world.rows.values() for r in rows)
    window = (stamps[-1] - stamps[0]) / 20
    assert window > 0

    result = await stream_ready_run(p.settings, pool, request_for(p, fake_ig, push_batch_size=8,
                                                                  order_window_seconds=window),
                                    WspStats(), anyio.Event())

    assert result.status == "STREAMED", result.reason
    assert fake_ig.stalled == 2
    assert_order_at_ig(fake_ig.admitted, p.world, window)
