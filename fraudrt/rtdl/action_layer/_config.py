"""The Action Layer's settings (`config/rtdl/action_layer.yaml`, pack `options` over it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from fraudrt.config import ConfigError
from fraudrt.contracts import recipe_hash

from .._component_config import load_component_config

FILE_NAME: Final = "action_layer.yaml"
ALL_KINDS: Final = ("APPROVE_TXN", "REQUEST_STEP_UP", "HOLD_FOR_REVIEW", "DECLINE_TXN")


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class PolicyConfig(_Section, frozen=True):
    """What the Action Layer may execute. An intent outside it gets a DENIED outcome with the reason."""

    policy_id: str = "al.execution_policy.v1"
    # The execution posture in force, one of `postures`.
    execution_posture: str = "NORMAL"
    # Posture -> the action kinds it lets through.
    postures: dict[str, list[str]] = msgspec.field(default_factory=lambda: {
        "NORMAL": list(ALL_KINDS),
        "CONTAIN": ["HOLD_FOR_REVIEW", "DECLINE_TXN"],
        "HALT": [],
    })
    # Origin -> the actor principals allowed to ask for an action under it.
    principals: dict[str, list[str]] = msgspec.field(default_factory=lambda: {"DF": ["SYSTEM::decision_fabric"]})


class DownstreamConfig(_Section, frozen=True):
    """The simulated downstream (a card processor's disposition API)."""

    latency_ms: float = 2.0
    latency_jitter_ms: float = 2.0
    transient_failure_rate: float = 0.02
    permanent_failure_rate: float = 0.001
    # Results are a pure function of (seed, idempotency key, attempt): a re-execution reproduces them.
    seed: str = "al.sim.v1"
    # Calls in flight at once within one batch.
    concurrency: int = 64


class RetryConfig(_Section, frozen=True):
    max_attempts: int = 4
    base_backoff_ms: float = 50.0
    max_backoff_ms: float = 2000.0


class HealthThresholds(_Section, frozen=True):
    pending_age_amber_s: float = 10.0
    pending_age_red_s: float = 60.0
    failure_rate_amber: float = 0.05
    failure_rate_red: float = 0.20
    failure_window: int = 500
    failure_min_outcomes: int = 20
    rejected_amber: int = 1
    rejected_red: int = 100
    anomalies_amber: int = 1
    failed_batches_amber: int = 1
    failed_batches_red: int = 3


class ActionLayerConfig(_Section, frozen=True):
    policy: PolicyConfig = PolicyConfig()
    downstream: DownstreamConfig = DownstreamConfig()
    retry: RetryConfig = RetryConfig()
    health: HealthThresholds = HealthThresholds()

    def __post_init__(self) -> None:
        p, d, r = self.policy, self.downstream, self.retry
        if p.execution_posture not in p.postures:
            raise ConfigError(f"action_layer policy: execution_posture {p.execution_posture!r} is not one of "
                              f"{sorted(p.postures)}")
        for posture, kinds in p.postures.items():
            unknown = set(kinds) - set(ALL_KINDS)
            if unknown:
                raise ConfigError(f"action_layer policy: posture {posture} names unknown action kinds "
                                  f"{sorted(unknown)}")
        rates = (d.transient_failure_rate, d.permanent_failure_rate)
        if not all(0.0 <= x <= 1.0 for x in rates) or sum(rates) > 1.0:
            raise ConfigError("action_layer downstream: failure rates must be in [0, 1] and add up to at most 1")
        if d.latency_ms < 0 or d.latency_jitter_ms < 0 or d.concurrency < 1:
            raise ConfigError("action_layer downstream: latencies must be >= 0 and concurrency >= 1")
        if r.max_attempts < 1 or r.base_backoff_ms < 0 or r.max_backoff_ms < r.base_backoff_ms:
            raise ConfigError("action_layer retry: max_attempts >= 1 and 0 <= base_backoff_ms <= max_backoff_ms")

    def policy_digest(self) -> str:
        return recipe_hash("al.execution_policy.v1", msgspec.to_builtins(self.policy))


def load_config(options: Mapping[str, Any] | None = None) -> ActionLayerConfig:
    return load_component_config(ActionLayerConfig, FILE_NAME, options)
