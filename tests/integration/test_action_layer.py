"""The Action Layer on the real embedded substrate: intents on a private rtdl stream, the actor in process.

Each test puts decision-lane envelopes (tests/support/lane_events.py) on kinesalite, lets the actor
commit to the embedded Postgres through the runtime, and checks its ledger (`outcomes_for`), the
outcomes it wrote to the outbox (what the relay publishes) and its health.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import ActionOutcomePayload, decode_envelope, decode_payload, lane_event_decoder
from fraudrt.rtdl.action_layer import (
    ActionLayer,
    ActionLayerConfig,
    DownstreamConfig,
    PolicyConfig,
    RetryConfig,
    SimulatedDownstream,
    intake_progress,
    outcomes_for,
)
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations
from tests.support.harness import (
    Ack,
    LocalActor,
    SpyBus,
    checkpoints,
    covers,
    create_streams,
    make_scope,
    open_pool,
    put,
    wait_for,
)
from tests.support.lane_events import Chain, chain, with_event_id, with_payload

pytestmark = pytest.mark.integration

AL = "action_layer"


@pytest.fixture(scope="module")
async def pool(settings: Any) -> Any:
    async with open_pool(settings) as p:
        async with p.acquire() as conn:
            await apply_migrations(conn, "fraudrt.rtdl.action_layer")
        yield p


@pytest.fixture(scope="module")
async def bus(settings: Any) -> Any:
    async with KinesisBus(settings.kinesis) as b:
        yield b


def config(*, transient: float = 0.0, permanent: float = 0.0, max_attempts: int = 3, backoff_ms: float = 20.0,
           posture: str = "NORMAL") -> ActionLayerConfig:
    return ActionLayerConfig(
        policy=PolicyConfig(execution_posture=posture),
        downstream=DownstreamConfig(latency_ms=0.5, latency_jitter_ms=1.0, transient_failure_rate=transient,
                                    permanent_failure_rate=permanent),
        retry=RetryConfig(max_attempts=max_attempts, base_backoff_ms=backoff_ms, max_backoff_ms=max(backoff_ms, 100)))


def expected(cfg: ActionLayerConfig, c: Chain) -> tuple[str, str, list[str]]:
    """(status, reason, attempt states) the layer must reach for `c`, from the downstream's answers."""
    if c.action_kind not in cfg.policy.postures[cfg.policy.execution_posture]:
        return "DENIED", f"POSTURE_BLOCK:{cfg.policy.execution_posture}:{c.action_kind}", ["DENIED"]
    sim = SimulatedDownstream(cfg.downstream)
    states: list[str] = []
    for attempt in range(1, cfg.retry.max_attempts + 1):
        state, _ = sim.verdict(c.idempotency_key, attempt)
        states.append(state)
        if state == "SUCCEEDED":
            return "EXECUTED", "OK", states
        if state == "PERMANENT_FAILURE":
            return "FAILED", "PERMANENT_FAILURE:REJECTED_BY_PROVIDER", states
    return "FAILED", "RETRIES_EXHAUSTED", states


async def outbox_outcomes(pool: Any, stream: str) -> list[tuple[str, ActionOutcomePayload]]:
    """Every outcome the actor wrote to the outbox for `stream` (what the relay publishes), in order."""
    rows = await pool.fetch("SELECT event_id, data FROM rt_outbox WHERE stream = $1 ORDER BY id", stream)
    out = []
    for r in rows:
        data = bytes(r["data"])
        decode_envelope(data)  # a valid envelope, as any consumer decodes it
        out.append((r["event_id"], decode_payload(lane_event_decoder.decode(data))))
    return out


async def wait_done(pool: Any, run: str, acks: Iterable[Ack], outcomes: int, timeout: float = 90.0) -> None:
    """Until the checkpoint covers `acks` and `outcomes` intents have their outcome."""
    acks = list(acks)

    async def probe() -> tuple[bool, int]:
        async with pool.acquire() as conn:
            return covers(await checkpoints(pool, AL, run), acks), (await intake_progress(conn, run))["outcome_total"]

    await wait_for(probe, lambda v: v[0] and v[1] >= outcomes, timeout=timeout, interval=0.1,
                   what=f"checkpoint at the last record and {outcomes} outcomes")


def pick(run: str, cfg: ActionLayerConfig, want: str, reason: str, states: list[str], action: str = "APPROVE",
         start: int = 0) -> Chain:
    """The first chain from `start` on whose expected result is (want, reason, states)."""
    for n in range(start, start + 20000):
        c = chain(run, n, action=action)
        if expected(cfg, c) == (want, reason, states):
            return c
    raise AssertionError(f"no chain with {want} {reason} {states}")


async def test_every_intent_gets_exactly_one_outcome_from_trim_horizon_whatever_the_downstream_says(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["rtdl"])
    cfg = config(transient=0.4, permanent=0.1, max_attempts=3, posture="CONTAIN")
    # Every way an intent can end, for sure, plus a plain mix.
    chains = [
        pick(run, cfg, "EXECUTED", "OK", ["SUCCEEDED"], action="REVIEW"),
        pick(run, cfg, "EXECUTED", "OK", ["TRANSIENT_FAILURE", "SUCCEEDED"], action="DECLINE"),
        pick(run, cfg, "EXECUTED", "OK", ["TRANSIENT_FAILURE", "TRANSIENT_FAILURE", "SUCCEEDED"], action="REVIEW"),
        pick(run, cfg, "FAILED", "RETRIES_EXHAUSTED", ["TRANSIENT_FAILURE"] * 3, action="DECLINE"),
        pick(run, cfg, "FAILED", "PERMANENT_FAILURE:REJECTED_BY_PROVIDER", ["PERMANENT_FAILURE"], action="REVIEW"),
        pick(run, cfg, "FAILED", "PERMANENT_FAILURE:REJECTED_BY_PROVIDER", ["TRANSIENT_FAILURE", "PERMANENT_FAILURE"],
             action="DECLINE"),
        chain(run, 100_000, action="APPROVE"),  # CONTAIN denies approvals
        chain(run, 100_001, action="STEP_UP"),
    ]
    actions = ("APPROVE", "STEP_UP", "REVIEW", "DECLINE")
    chains += [chain(run, 200_000 + i, action=actions[i % 4]) for i in range(60)]
    # Everything is on the bus before the layer starts: it must read from TRIM_HORIZON, decisions
    # (passed over) and intents alike.
    acks = await put(bus, stream, [d for c in chains for d in (c.decision, c.intent)])
    actor = ActionLayer(cfg)
    async with SpyBus(scope.settings.kinesis) as spy, LocalActor(scope.settings, actor, run, pool, spy) as la:
        await wait_done(pool, run, acks, len(chains))
        assert spy.iterator_requests[0] == (stream, acks[0].shard_id, None), "no checkpoint: TRIM_HORIZON"
        health = actor.health()
        details = actor.health_details()
        calls = actor.downstream.calls
        latency = actor.latency_histograms()["decision_to_outcome"].summary()
        assert la.stats.dead_lettered == 0
    async with pool.acquire() as conn:
        ledger = {o.idempotency_key: o for o in await outcomes_for(conn, run)}
        counters = await intake_progress(conn, run)
    published = await outbox_outcomes(pool, stream)

    assert len(ledger) == len(chains)
    by_outcome = Counter(event_id for event_id, _ in published)
    assert len(published) == len(chains) and set(by_outcome.values()) == {1}, "one outcome per intent"
    payloads = {p.idempotency_key: p for _, p in published}
    kinds: Counter[tuple[str, str]] = Counter()
    for c in chains:
        status, reason, states = expected(cfg, c)
        row, p = ledger[c.idempotency_key], payloads[c.idempotency_key]
        assert (row.status, row.reason_code, [a.state for a in row.attempts]) == (status, reason, states), c.n
        assert (p.status, p.reason_code, [a.state for a in p.attempts]) == (status, reason, states)
        assert p.outcome_id == c.outcome_id == row.outcome_id and p.decision_id == c.decision_id
        assert [a.attempt_seq for a in p.attempts] == list(range(1, len(states) + 1))
        assert (p.provider_ref is not None) == (status == "EXECUTED")
        kinds[(status, reason)] += 1
    assert {k for k in kinds} >= {("EXECUTED", "OK"), ("FAILED", "RETRIES_EXHAUSTED"),
                                  ("FAILED", "PERMANENT_FAILURE:REJECTED_BY_PROVIDER")}
    assert kinds[("DENIED", "POSTURE_BLOCK:CONTAIN:APPROVE_TXN")] >= 1
    assert kinds[("DENIED", "POSTURE_BLOCK:CONTAIN:REQUEST_STEP_UP")] >= 1
    # Each attempt the outcomes list was one downstream call; denied intents made none.
    assert calls == sum(len(o.attempts) for o in ledger.values() if o.status != "DENIED")
    assert counters["intake_total"] == counters["outcome_total"] == len(chains)
    assert counters["passed_over_total"] == len(chains)  # the decisions
    assert details["intake_total"] == details["outcome_total"] == len(chains) and details["in_flight"] == 0
    assert latency["count"] == len(chains)
    # This downstream fails a fifth of them: the health says so, from the outcomes' failure rate.
    rate = sum(o.status == "FAILED" for o in ledger.values()) / len(ledger)
    assert health[0] == ("RED" if rate >= 0.2 else "AMBER" if rate >= 0.05 else "GREEN")
    assert health[1] == ([f"FAILURE_RATE: {rate:.1%} of the last {len(ledger)} outcomes FAILED"] if rate >= 0.05
                         else [])


async def test_duplicate_storms_and_replays_execute_nothing_twice_and_publish_one_outcome(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["rtdl"])
    # Half the intents need retries, so copies also arrive while their original waits for a timer.
    cfg = config(transient=0.5, max_attempts=4, backoff_ms=200)
    chains = [chain(run, i) for i in range(40)]
    storm = [c.intent for c in chains] * 3
    acks = await put(bus, stream, storm[:50])
    actor = ActionLayer(cfg)
    async with LocalActor(scope.settings, actor, run, pool, bus):
        acks += await put(bus, stream, storm[50:])
        await wait_done(pool, run, acks, len(chains))
        # A replay of the whole run, a changed copy of a known intent, another event claiming a known key.
        changed = with_payload(chains[0].intent, requested_at_utc="2030-01-01T00:00:00.000000Z")
        claimer = with_event_id(chains[1].intent, "f" * 64)
        acks += await put(bus, stream, [c.intent for c in chains] + [changed, claimer])
        await wait_done(pool, run, acks, len(chains))
        calls = actor.downstream.calls
        health = actor.health()
    async with pool.acquire() as conn:
        ledger = await outcomes_for(conn, run)
        counters = await intake_progress(conn, run)
        anomalies = await conn.fetch("SELECT kind, event_id, held_event_id FROM al_anomalies "
                                     "WHERE platform_run_id = $1 ORDER BY kind", run)
    published = await outbox_outcomes(pool, stream)

    assert sorted(p.idempotency_key for _, p in published) == sorted(c.idempotency_key for c in chains)
    by_key = {o.idempotency_key: o for o in ledger}
    assert len(ledger) == len(chains)
    assert all(by_key[c.idempotency_key].status == expected(cfg, c)[0] for c in chains)
    assert calls == sum(len(o.attempts) for o in ledger), "no intent executed beyond its own attempts"
    assert counters["intake_total"] == counters["outcome_total"] == len(chains)
    assert counters["duplicates_total"] == 2 * len(chains) + len(chains)
    assert [(a["kind"], a["event_id"], a["held_event_id"]) for a in anomalies] == [
        ("INTENT_CONFLICT", "f" * 64, chains[1].intent_event_id),
        ("PAYLOAD_MISMATCH", chains[0].intent_event_id, chains[0].intent_event_id)]
    # The held intent and its outcome are untouched by the changed copy.
    original = by_key[chains[0].idempotency_key]
    assert original.intent_event_id == chains[0].intent_event_id
    assert [a.state for a in original.attempts] == expected(cfg, chains[0])[2]
    assert health[0] == "AMBER" and any(r.startswith("INTENT_ANOMALIES: 2") for r in health[1])


async def test_an_intent_waiting_for_a_retry_does_not_hold_back_the_intents_after_it(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["rtdl"])
    # The first retry waits 4.8-7.2 s: far longer than the later intents need to be executed.
    cfg = config(transient=0.5, max_attempts=2, backoff_ms=6000)
    slow = pick(run, cfg, "EXECUTED", "OK", ["TRANSIENT_FAILURE", "SUCCEEDED"])
    later = []
    n = slow.n + 1
    while len(later) < 20:
        later.append(pick(run, cfg, "EXECUTED", "OK", ["SUCCEEDED"], start=n))
        n = later[-1].n + 1
    actor = ActionLayer(cfg)
    async with LocalActor(scope.settings, actor, run, pool, bus):
        acks = await put(bus, stream, [slow.intent])
        await wait_done(pool, run, acks, 0)
        async with pool.acquire() as conn:
            assert [o.status for o in await outcomes_for(conn, run)] == ["PENDING"]
        acks += await put(bus, stream, [c.intent for c in later])
        await wait_done(pool, run, acks, len(later))
        async with pool.acquire() as conn:
            statuses = {o.idempotency_key: o.status for o in await outcomes_for(conn, run)}
        # Every later intent of the shard is done while the first still waits for its retry timer.
        assert statuses.pop(slow.idempotency_key) == "PENDING"
        assert set(statuses.values()) == {"EXECUTED"}
        assert actor.health_details()["in_flight"] == 1
        await wait_done(pool, run, acks, len(later) + 1)
    async with pool.acquire() as conn:
        done = {o.idempotency_key: o for o in await outcomes_for(conn, run)}
    first = done[slow.idempotency_key]
    assert (first.status, [a.state for a in first.attempts]) == ("EXECUTED", ["TRANSIENT_FAILURE", "SUCCEEDED"])
    assert all(done[c.idempotency_key].completed_at_utc < (first.completed_at_utc or "") for c in later)


async def test_records_that_are_not_readable_intents_are_dead_lettered_and_turn_health_amber(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    run = scope.run_id
    (stream,) = await create_streams(scope.settings, ["rtdl"])
    good = chain(run, 1)
    broken = msgspec.json.decode(chain(run, 2).intent)
    del broken["payload"]["idempotency_key"]
    old_version = msgspec.json.decode(chain(run, 3).intent)
    old_version["schema_version"] = "v0"
    actor = ActionLayer(config())
    async with LocalActor(scope.settings, actor, run, pool, bus) as la:
        acks = await put(bus, stream, [msgspec.json.encode(broken), msgspec.json.encode(old_version), good.intent])
        await wait_done(pool, run, acks, 1)
        health = actor.health()
        dead = la.stats.dead_lettered
    rows = await pool.fetch("SELECT reason FROM rt_dead_letters WHERE actor = $1 AND platform_run_id = $2 "
                            "ORDER BY sequence_number", AL, run)
    assert dead == 2
    assert rows[0]["reason"].startswith("INVALID_ACTION_INTENT: Object missing required field `idempotency_key`")
    assert rows[1]["reason"].startswith("UNSUPPORTED_SCHEMA_VERSION: 'v0'")
    assert health[0] == "AMBER" and health[1] == ["DEAD_LETTERS: 2 records rejected"]
