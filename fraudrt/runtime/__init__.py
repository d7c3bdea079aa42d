"""The actor runtime, as a component author sees it.

An `Actor` consumes streams a batch at a time (`handle(batch)`), with state, emitted envelopes,
timers, dead letters and its checkpoint committed in one Postgres transaction; a `Service` runs
anything else. From a batch: `take_in` (idempotent intake), `emit`, `set_timer` / `cancel_timer`,
`dead_letter`. From the context: `fence()` (wait on another component's progress) and
`notifications`. `classify` judges any failure; `Findings` turns a component's signals into a health
verdict; `LatencyHistogram` measures a hop; `pack_columns` / `split_sql` pass a batch to Postgres as
columns.

Pack operations (up, down, status, manifests, run ids, migrations) are in `fraudrt.runtime.packs`;
the Kinesis data plane (client, PutRecords sender) in `fraudrt.runtime.bus`.
"""

from ._actor import Actor, Batch, ComponentContext, Service
from ._classify import Failure, FailureKind, classify, is_transient
from ._errors import BusError, ExpiredIteratorError, FraudrtRuntimeError, StreamNotFoundError, ThrottledError
from ._fence import Notifications, ProgressFence
from ._health import Findings, Health, HealthThresholds, worst, worst_of
from ._inbox import Intake, content_hash, take_in
from ._latency import LatencyHistogram
from ._pgcolumns import pack_columns, split_sql
from ._records import Emit, InboundRecord
from ._timers import Timer

__all__ = [
    "Actor",
    "Batch",
    "BusError",
    "ComponentContext",
    "Emit",
    "ExpiredIteratorError",
    "Failure",
    "FailureKind",
    "Findings",
    "FraudrtRuntimeError",
    "Health",
    "HealthThresholds",
    "InboundRecord",
    "Intake",
    "LatencyHistogram",
    "Notifications",
    "ProgressFence",
    "Service",
    "StreamNotFoundError",
    "ThrottledError",
    "Timer",
    "classify",
    "content_hash",
    "is_transient",
    "pack_columns",
    "split_sql",
    "take_in",
    "worst",
    "worst_of",
]
