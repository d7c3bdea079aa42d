"""Context Store / Flow Binding (CSFB): join frames per arrival and flow_id -> context bindings.

Public surface: the actor (`ContextStoreFlowBinding`, in the rtdl_core pack), the typed reader
(`reader`: the only way other components read CSFB state), the record types it returns, and the
offline polars computation of the same frames and bindings (`offline`).
"""

from . import offline, reader
from ._actor import ContextStoreFlowBinding
from ._health import Thresholds
from ._model import (
    BINDING_COLUMNS,
    FRAME_COLUMNS,
    PARTS,
    ArrivalEntitiesPart,
    ArrivalEventPart,
    FlowAnchorPart,
    FlowBinding,
    JoinFrame,
    JoinFrameKey,
    JoinReadiness,
    Part,
    Readiness,
    binding_row,
    frame_row,
)
from .reader import (
    NOTIFY_CHANNEL,
    CompletedPage,
    CsfbProgress,
    completed_since,
    fetch_join_frames,
    join_readiness,
    progress,
    resolve_flow_binding,
    state_digest,
)

__all__ = [
    "BINDING_COLUMNS",
    "FRAME_COLUMNS",
    "NOTIFY_CHANNEL",
    "PARTS",
    "ArrivalEntitiesPart",
    "ArrivalEventPart",
    "CompletedPage",
    "ContextStoreFlowBinding",
    "CsfbProgress",
    "FlowAnchorPart",
    "FlowBinding",
    "JoinFrame",
    "JoinFrameKey",
    "JoinReadiness",
    "Part",
    "Readiness",
    "Thresholds",
    "binding_row",
    "completed_since",
    "fetch_join_frames",
    "frame_row",
    "join_readiness",
    "offline",
    "progress",
    "reader",
    "resolve_flow_binding",
    "state_digest",
]
