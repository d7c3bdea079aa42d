"""Action Layer: executes each action intent once against the (simulated) downstream, with retries,
and publishes exactly one outcome (EXECUTED / FAILED / DENIED) per intent to `fp.bus.rtdl.v1`."""

from ._actor import RETRY_TIMER, ActionLayer
from ._config import (
    ActionLayerConfig,
    DownstreamConfig,
    HealthThresholds,
    PolicyConfig,
    RetryConfig,
    load_config,
)
from ._downstream import SimulatedDownstream, retry_delay_s
from ._policy import ExecutionPolicy
from ._store import COUNTERS
from .reader import IntentOutcome, intake_progress, outcomes_for

__all__ = [
    "COUNTERS",
    "RETRY_TIMER",
    "ActionLayer",
    "ActionLayerConfig",
    "DownstreamConfig",
    "ExecutionPolicy",
    "HealthThresholds",
    "IntentOutcome",
    "PolicyConfig",
    "RetryConfig",
    "SimulatedDownstream",
    "intake_progress",
    "load_config",
    "outcomes_for",
    "retry_delay_s",
]
