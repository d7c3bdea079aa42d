"""Decision Log/Audit: append-only audit segments in the object store with a Postgres index; joins
each decision to its intent and outcome in any arrival order; publishes one audit record per chain
(RESOLVED, or UNRESOLVED when its grace period ends first) to `fp.bus.audit.v1`."""

from ._actor import GRACE_TIMER, LANE_TYPES, DecisionLogAudit
from ._config import DecisionLogAuditConfig, HealthThresholds, load_config
from ._lineage import Chain, Fact, join
from ._segments import CRASH_AFTER_SEGMENT_PUTS_ENV, SegmentLine, segment_key, segment_ref
from ._store import COUNTERS
from .reader import AnomalyView, ChainView, LinkView, anomalies, audit_progress, chains, links

__all__ = [
    "COUNTERS",
    "CRASH_AFTER_SEGMENT_PUTS_ENV",
    "GRACE_TIMER",
    "LANE_TYPES",
    "AnomalyView",
    "Chain",
    "ChainView",
    "DecisionLogAudit",
    "DecisionLogAuditConfig",
    "Fact",
    "HealthThresholds",
    "LinkView",
    "SegmentLine",
    "anomalies",
    "audit_progress",
    "chains",
    "join",
    "links",
    "load_config",
    "segment_key",
    "segment_ref",
]
