"""The Action Layer's pure parts: its settings file, the simulated downstream, the retry schedule, the policy."""

from __future__ import annotations

import msgspec
import pytest

from fraudrt.config import ConfigError
from fraudrt.contracts import ActionIntentPayload
from fraudrt.rtdl.action_layer import (
    ActionLayerConfig,
    DownstreamConfig,
    ExecutionPolicy,
    PolicyConfig,
    RetryConfig,
    SimulatedDownstream,
    load_config,
    retry_delay_s,
)

pytestmark = pytest.mark.unit

TS = "2031-01-01T00:00:00.000000Z"


def test_the_shipped_settings_file_is_the_documented_default_and_options_override_it() -> None:
    assert load_config() == ActionLayerConfig()
    tuned = load_config({"policy": {"execution_posture": "HALT"}, "retry": {"max_attempts": 2}})
    assert tuned.policy.execution_posture == "HALT" and tuned.retry.max_attempts == 2
    assert tuned.retry.base_backoff_ms == ActionLayerConfig().retry.base_backoff_ms  # merged, not replaced
    with pytest.raises(ConfigError, match="max_attemps"):
        load_config({"retry": {"max_attemps": 2}})  # a typo is an error, not a silent default
    with pytest.raises(ConfigError, match="execution_posture"):
        ActionLayerConfig(policy=PolicyConfig(execution_posture="PANIC"))


def test_the_downstream_answers_each_key_and_attempt_the_same_way_every_time() -> None:
    cfg = DownstreamConfig(transient_failure_rate=0.3, permanent_failure_rate=0.1)
    a, b = SimulatedDownstream(cfg), SimulatedDownstream(cfg)
    keys = [f"{i:064x}" for i in range(4000)]
    assert [a.verdict(k, n) for k in keys for n in (1, 2)] == [b.verdict(k, n) for k in keys for n in (1, 2)]
    states = [a.verdict(k, 1)[0] for k in keys]
    # The configured rates, within sampling error of 4000 draws.
    assert abs(states.count("TRANSIENT_FAILURE") / 4000 - 0.3) < 0.03
    assert abs(states.count("PERMANENT_FAILURE") / 4000 - 0.1) < 0.02
    # Attempts of one key are independent draws: a transient failure can clear on the next one.
    assert any(a.verdict(k, 1)[0] == "TRANSIENT_FAILURE" and a.verdict(k, 2)[0] == "SUCCEEDED" for k in keys)
    latencies = [a.verdict(k, 1)[1] for k in keys]
    assert min(latencies) >= cfg.latency_ms and max(latencies) <= cfg.latency_ms + cfg.latency_jitter_ms


def test_retry_delays_grow_are_capped_and_repeat_exactly() -> None:
    retry = RetryConfig(max_attempts=6, base_backoff_ms=50, max_backoff_ms=300)
    delays = [retry_delay_s(retry, "s", "k" * 64, n) for n in range(1, 6)]
    assert delays == [retry_delay_s(retry, "s", "k" * 64, n) for n in range(1, 6)]
    for n, d in enumerate(delays, start=1):
        base = min(300, 50 * 2 ** (n - 1)) / 1000
        assert 0.8 * base <= d <= 1.2 * base


def _intent(kind: str, origin: str = "DF", principal: str = "SYSTEM::decision_fabric") -> ActionIntentPayload:
    return msgspec.convert({
        "action_id": "1" * 32, "decision_id": "2" * 32, "action_kind": kind, "idempotency_key": "3" * 64,
        "source_event_id": "e", "flow_id": 1, "actor_principal": principal, "origin": origin,
        "reason_ref": "decision://x", "admitted_at_utc": TS, "decided_at_utc": TS, "requested_at_utc": TS,
    }, ActionIntentPayload)


def test_the_policy_denies_with_a_reason_what_the_posture_origin_or_principal_forbids() -> None:
    normal = ExecutionPolicy(PolicyConfig())
    contain = ExecutionPolicy(PolicyConfig(execution_posture="CONTAIN"))
    assert normal.deny_reason(_intent("APPROVE_TXN")) is None
    assert contain.deny_reason(_intent("APPROVE_TXN")) == "POSTURE_BLOCK:CONTAIN:APPROVE_TXN"
    assert contain.deny_reason(_intent("DECLINE_TXN")) is None
    assert normal.deny_reason(_intent("APPROVE_TXN", origin="OPS")) == "ORIGIN_NOT_ALLOWED:OPS"
    assert normal.deny_reason(_intent("APPROVE_TXN", principal="HUMAN::mallory")) == \
        "PRINCIPAL_NOT_ALLOWED:HUMAN::mallory"
