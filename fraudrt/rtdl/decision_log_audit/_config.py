"""The Decision Log/Audit's settings (`config/rtdl/decision_log_audit.yaml`, pack `options` over it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from fraudrt.config import ConfigError

from .._component_config import load_component_config

FILE_NAME: Final = "decision_log_audit.yaml"


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class HealthThresholds(_Section, frozen=True):
    unresolved_amber: int = 1
    unresolved_red: int = 20
    rejected_amber: int = 1
    rejected_red: int = 100
    anomalies_amber: int = 1
    segment_failures_amber: int = 1
    segment_failures_red: int = 3
    failed_batches_amber: int = 1
    failed_batches_red: int = 3


class DecisionLogAuditConfig(_Section, frozen=True):
    # How long a chain may stay incomplete before it is audited UNRESOLVED.
    grace_seconds: float = 30.0
    # Unresolved chains listed (oldest first) in the reconciliation artifact; the count is always whole.
    unresolved_list_cap: int = 100
    # Segment objects named in the reconciliation's evidence (the newest).
    evidence_segments: int = 20
    reconciliation_interval_seconds: float = 2.0
    health: HealthThresholds = HealthThresholds()

    def __post_init__(self) -> None:
        if self.grace_seconds <= 0 or self.unresolved_list_cap < 0 or self.reconciliation_interval_seconds <= 0:
            raise ConfigError("decision_log_audit: grace_seconds and reconciliation_interval_seconds must be > 0")


def load_config(options: Mapping[str, Any] | None = None) -> DecisionLogAuditConfig:
    return load_component_config(DecisionLogAuditConfig, FILE_NAME, options)
