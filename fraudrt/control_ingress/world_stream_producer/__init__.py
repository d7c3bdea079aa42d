"""World Stream Producer: on READY, replay the sealed world's stream views to IG on one event-time clock.

`WorldStreamProducer` is the control_ingress pack's actor (READY recorded in `handle`, streamed in
`background`); `ready_consumer_once` is the same work as a one-shot command. `OrderedLanes` is
the scheduler between the merged clock and IG: each output in order, outputs within a window.
Postgres tables: `wsp_ready_runs` (one row per READY message_id) and `wsp_checkpoints` (per platform
run, scenario run and output: next part/row after the acknowledged prefix).
"""

from ._actor import WorldStreamProducer, ig_base_url, wsp_api_key
from ._lanes import LaneBatch, LaneStats, OrderedLanes
from ._merge import BatchSource, merge_by_event_time
from ._once import ReadyConsumerOnceRequest, ReadyConsumerOnceResult, ready_consumer_once
from ._progress import Position, PrefixTracker
from ._push import IgPusher, IgRejected, IgRetryExhausted, PushAbandoned, PushStats, RetryPolicy, ingest_url
from ._source import SourceStats, StreamViewChanged, StreamViewSource, ViewRow, arrow_s3
from ._store import SQL_PACKAGE, Checkpoint, ReadyOutcome, load_checkpoints, record_ready
from ._stream import PRODUCER, StreamFailed, StreamRequest, StreamResult, WspStats, stream_ready_run

__all__ = [
    "PRODUCER",
    "SQL_PACKAGE",
    "BatchSource",
    "Checkpoint",
    "IgPusher",
    "IgRejected",
    "IgRetryExhausted",
    "LaneBatch",
    "LaneStats",
    "OrderedLanes",
    "Position",
    "PrefixTracker",
    "PushAbandoned",
    "PushStats",
    "ReadyConsumerOnceRequest",
    "ReadyConsumerOnceResult",
    "ReadyOutcome",
    "RetryPolicy",
    "SourceStats",
    "StreamFailed",
    "StreamRequest",
    "StreamResult",
    "StreamViewChanged",
    "StreamViewSource",
    "ViewRow",
    "WorldStreamProducer",
    "WspStats",
    "arrow_s3",
    "ig_base_url",
    "ingest_url",
    "load_checkpoints",
    "merge_by_event_time",
    "ready_consumer_once",
    "record_ready",
    "stream_ready_run",
    "wsp_api_key",
]
