"""The Decision Fabric on the real substrate, with the real projectors in front of it.

Each test streams a generated world onto private streams as IG would admit it, runs CSFB, OFP, IEG
and DF in process (`tests/support/df_lane.py`) and reads what DF decided through its reader
and its outbox rows.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import decode_envelope
from fraudrt.engine import GenerateRequest, generate_world
from fraudrt.rtdl.decision_fabric import DecisionFabric, decisions_digest
from fraudrt.rtdl.policy import (
    GROUPS,
    decide,
    evaluate_world,
    frame_columns,
    load_bundle,
    load_policy,
    needed_inputs,
    offline_inputs,
    quality_of,
    world_truth,
)
from fraudrt.runtime.bus import KinesisBus
from tests.support.df_lane import (
    TEST_DF_OPTIONS,
    emitted,
    lane,
    posture,
    put_context,
    put_traffic,
    replica,
    request_count,
    wait_decided,
    world_envelopes,
)
from tests.support.harness import mint_run_id, scratch_database, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("df_world")
    summary = generate_world(GenerateRequest(out_dir=str(out), seed=23, n_flows=800, fraud_rate=0.08,
                                             modes=("fraud",)))
    return Path(summary.engine_run_root)


@pytest.fixture(scope="module")
async def bus(settings: Settings) -> Any:
    async with KinesisBus(settings.kinesis) as b:
        yield b


async def test_same_world_twice_same_decisions_whatever_the_truth_and_the_arrival_order(
        settings: Settings, bus: KinesisBus, world: Path) -> None:
    """Replica A: context first, then traffic. Replica B: the same world with fraud_flag/campaign_id
    shuffled, traffic first and the context only after DF has parked every request (durable join-wait).
    Same platform run id, separate databases: every decision id, action, score and content digest agree;
    each AUTH_REQUEST is decided once, with one decision and one intent in the outbox; the online
    decisions are exactly what the offline replay of the world through the shipped bundle decides."""
    run = mint_run_id()
    plain = world_envelopes(world, run)
    shuffled = world_envelopes(world, run, truth_shuffle_seed=99)
    assert plain["traffic_fraud"] != shuffled["traffic_fraud"]  # the truth really moved
    n = request_count(plain)
    async with scratch_database(settings, "df_a") as dsn_a, scratch_database(settings, "df_b") as dsn_b, \
            replica(settings, dsn_a) as a, replica(settings, dsn_b) as b:
        await posture(a, run, "NORMAL")
        await posture(b, run, "NORMAL")
        # One configuration for both (it is part of every decision's run_config_digest); a deadline
        # long enough that B's parked requests wait for their context, however slow the machine.
        options = {**TEST_DF_OPTIONS, "deadline_seconds": 600}
        df_a, df_b = DecisionFabric(options), DecisionFabric(options)
        async with lane(a, run, bus, df_a), lane(b, run, bus, df_b):
            await put_context(a, bus, plain)
            await put_traffic(a, bus, plain["traffic_fraud"])
            await put_traffic(b, bus, shuffled["traffic_fraud"])
            await wait_for(lambda: _pending(b, run), lambda p: p == n, timeout=120, what="B parks every request")
            assert await _decided(b, run) == 0
            await put_context(b, bus, shuffled)
            rows_a = await wait_decided(a, run, n)
            rows_b = await wait_decided(b, run, n)
            assert await _pending(b, run) == 0

            # Duplicates (a replay of the whole traffic stream) and a changed copy decide nothing again.
            await put_traffic(a, bus, plain["traffic_fraud"])
            changed = _first_request(plain).replace(b'"amount":', b'"amount":1', 1)
            await put_traffic(a, bus, [changed])

            async def metrics() -> dict[str, Any]:
                return df_a.metrics()

            await wait_for(metrics, lambda m: (m.get("duplicates_total", 0), m.get("payload_mismatches_total", 0))
                           == (n, 1), timeout=120, what="the replay seen as duplicates, the changed copy as such")
            assert df_a.metrics()["decisions_total"] == n
        assert await _decided(a, run) == n

        key = [(r.decision_id, r.flow_id, r.action, r.score, r.content_digest, r.context_status) for r in rows_a]
        assert key == [(r.decision_id, r.flow_id, r.action, r.score, r.content_digest, r.context_status)
                       for r in rows_b]
        assert await decisions_digest(a.pool, run) == await decisions_digest(b.pool, run)
        assert {r.context_status for r in rows_a} == {"COMPLETE"}
        assert len({r.flow_id for r in rows_a}) == n
        assert max(r.waited_ms for r in rows_b) > max(r.waited_ms for r in rows_a)  # B really waited
        assert len(Counter(r.action for r in rows_a)) >= 3  # not one action for everything

        for rep, rows in ((a, rows_a), (b, rows_b)):
            events = await emitted(rep)
            assert Counter(t for t, _, _ in events) == {"decision_response": n, "action_intent": n}
            assert len({e.event_id for _, e, _ in events}) == 2 * n
            decisions = {p.decision_id: (e, p) for t, e, p in events if t == "decision_response"}
            intents = {p.decision_id: (e, p) for t, e, p in events if t == "action_intent"}
            assert set(decisions) == set(intents) == {r.decision_id for r in rows}
            for decision_id, (env, payload) in decisions.items():
                intent_env, intent = intents[decision_id]
                assert intent_env.parent_event_id == env.event_id
                assert intent.action_kind == {"APPROVE": "APPROVE_TXN", "STEP_UP": "REQUEST_STEP_UP",
                                              "REVIEW": "HOLD_FOR_REVIEW", "DECLINE": "DECLINE_TXN"}[payload.action]
                assert payload.bundle.digest == load_bundle(load_policy().bundle_path("model")).digest
                assert payload.features.graph_version is not None and payload.posture.mode == "NORMAL"

        # The dead-lettered changed copy says why.
        reasons = await a.pool.fetch("SELECT reason FROM rt_dead_letters WHERE actor = 'decision_fabric' AND "
                                     "platform_run_id = $1", run)
        assert [r["reason"].split(":")[0] for r in reasons] == ["PAYLOAD_MISMATCH"]

    # What DF decided online is what the offline replay of the world through the same bundle decides.
    model = load_bundle(load_policy().bundle_path("model"))
    offline = evaluate_world(world, [("model", model, GROUPS, True)])[0]
    online = quality_of(((r.flow_id, r.action) for r in rows_a), world_truth(world), label="model", bundle=model,
                        groups=GROUPS)
    assert online.per_action == offline.per_action and online.per_campaign == offline.per_campaign
    assert online.undecided_flows == 0 and online.unmatched_decisions == 0


async def _decided(rep: Any, run: str) -> int:
    return int(await rep.pool.fetchval("SELECT count(*) FROM df_decisions WHERE platform_run_id = $1", run))


async def _pending(rep: Any, run: str) -> int:
    return int(await rep.pool.fetchval("SELECT count(*) FROM df_pending WHERE platform_run_id = $1", run))


def _first_request(envs: dict[str, list[bytes]]) -> bytes:
    return next(d for d in envs["traffic_fraud"] if decode_envelope(d).payload["event_type"] == "AUTH_REQUEST")



async def test_context_that_never_arrives_is_decided_at_its_deadline_once_across_a_restart(
        settings: Settings, bus: KinesisBus, world: Path) -> None:
    """Five flows' context never arrives. DF parks them, is stopped while they wait and started again
    (a new actor on the same state); each is decided once, at its deadline, as CONTEXT_MISSING with
    the NORMAL posture's safe default, while every other flow is decided on its full context."""
    run = mint_run_id()
    full = world_envelopes(world, run)
    flows = [decode_envelope(d).payload["flow_id"] for d in full["traffic_fraud"]]
    lost = sorted(set(flows))[:5]
    envs = world_envelopes(world, run, drop_context_of=lost)
    n = request_count(envs)
    options = {**TEST_DF_OPTIONS, "deadline_seconds": 6.0}
    async with replica(settings) as rep:
        await posture(rep, run, "NORMAL")
        async with lane(rep, run, bus, DecisionFabric(options)):
            await put_context(rep, bus, envs)
            await put_traffic(rep, bus, envs["traffic_fraud"])
            await wait_for(lambda: _decided(rep, run), lambda d: d == n - len(lost), timeout=120,
                           what="every flow with context decided")
            assert await _pending(rep, run) == len(lost)
        # Stopped with five requests waiting; their rows and deadline timers are durable.
        df = DecisionFabric(options)
        async with lane(rep, run, bus, df, projectors=False):
            rows = await wait_decided(rep, run, n, timeout=120)
            await wait_for(lambda: _pending(rep, run), lambda p: p == 0, timeout=30, what="nothing left waiting")
            state, reasons = df.health()
            metrics = df.metrics()
        assert await _decided(rep, run) == n
        missing = [r for r in rows if r.context_status == "CONTEXT_MISSING"]
        assert sorted(r.flow_id for r in missing) == lost
        # Decided at the deadline (6 s after DF first saw them), not before.
        assert all(r.waited_ms >= 6000.0 for r in missing)
        assert {r.action for r in missing} <= {"STEP_UP", "REVIEW", "DECLINE"}  # never APPROVE blind
        assert all(r.action == "STEP_UP" for r in missing if r.score is None)
        events = await emitted(rep)
        assert Counter(t for t, _, _ in events) == {"decision_response": n, "action_intent": n}
        blind = {p.decision_id: p for t, _, p in events if t == "decision_response" and p.context_status != "COMPLETE"}
        assert len(blind) == len(lost)
        for payload in blind.values():
            assert payload.score is None and "CONTEXT_MISSING" in payload.reason_codes
            assert any(m.startswith("csfb:") for m in payload.missing_context)
            assert any(m.startswith("ieg:") for m in payload.missing_context)
        # The restarted DF counts the run's decisions from its table, and its health window with them:
        # 5 blind decisions of n is below the 1% an operator tolerates, so no alarm for them.
        assert metrics["decisions_total"] == n and metrics["decisions_context.CONTEXT_MISSING"] == len(lost)
        assert metrics["pending"] == 0
        assert 5 / n < 0.01 and state == "GREEN", reasons


async def test_posture_is_a_hard_constraint_on_every_decision(settings: Settings, bus: KinesisBus,
                                                              world: Path) -> None:
    """The world's traffic in four chunks, each under another posture: NORMAL uses the full model;
    DEGRADED_1 the model without graph features (and no graph version); DEGRADED_2 the rules-only bundle
    over request and binding inputs (no score); FAIL_CLOSED holds everything for REVIEW. Each chunk's
    decisions are exactly the offline replay of the same flows under the same constraint."""
    run = mint_run_id()
    envs = world_envelopes(world, run)
    policy = load_policy()
    model, rules = load_bundle(policy.bundle_path("model")), load_bundle(policy.bundle_path("rules_only"))
    inputs = offline_inputs(world)
    expected = {mode: _offline(inputs, model if caps.model else rules, caps.groups, caps.model)
                for mode, caps in policy.postures.items() if caps.forced_action is None}
    traffic = envs["traffic_fraud"]
    chunks = [traffic[i * len(traffic) // 4:(i + 1) * len(traffic) // 4] for i in range(4)]
    modes = ["NORMAL", "DEGRADED_1", "DEGRADED_2", "FAIL_CLOSED"]
    async with replica(settings) as rep:
        async with lane(rep, run, bus):
            await put_context(rep, bus, envs)
            decided = 0
            for mode, chunk in zip(modes, chunks, strict=True):
                await posture(rep, run, mode)
                await put_traffic(rep, bus, chunk)
                decided += sum(1 for d in chunk if decode_envelope(d).payload["event_type"] == "AUTH_REQUEST")
                await wait_decided(rep, run, decided)
        payloads = {p.flow_id: p for t, _, p in await emitted(rep) if t == "decision_response"}
    assert len(payloads) == decided
    seen: Counter[str] = Counter()
    full, no_graph = model.bundle.models
    graph_features = {f.name for f in full.features} - {f.name for f in no_graph.features}
    for p in payloads.values():
        mode = p.posture.mode
        seen[mode] += 1
        assert p.context_status == "COMPLETE"
        if mode == "FAIL_CLOSED":
            assert p.action == "REVIEW" and p.score is None and "FORCED:REVIEW" in p.reason_codes
            continue
        want_action, want_score = expected[mode][p.flow_id]
        assert (p.action, p.score) == (want_action, want_score), (mode, p.flow_id)
        if mode == "NORMAL":
            assert p.bundle.digest == model.digest and p.features.graph_version is not None
        elif mode == "DEGRADED_1":
            assert p.bundle.digest == model.digest and p.features.graph_version is None
            assert not {c.name for c in p.top_features} & graph_features
        else:
            assert p.bundle.digest == rules.digest and p.score is None and p.features.definitions_digest is None
            assert set(p.rules_fired) <= {"AMOUNT_LIMIT", "HIGH_VALUE_CARD_NOT_PRESENT"}
    assert set(seen) == set(modes), seen


def _offline(inputs: Any, loaded: Any, groups: Any, use_model: bool) -> dict[int, tuple[str, float | None]]:
    cols = frame_columns(inputs, needed_inputs(loaded.bundle, groups, use_model))
    verdicts = decide(loaded.bundle, cols, groups=groups, use_model=use_model)
    return {f: (v.action, v.score) for f, v in zip(inputs["flow_id"].to_list(), verdicts, strict=True)}
