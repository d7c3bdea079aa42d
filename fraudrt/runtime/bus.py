"""The Kinesis data plane, for the few components that publish or read directly (IG, WSP's control
reads, evidence checks): the lean client, its record shapes, the one PutRecords sender, and
sequence-number helpers. Actors never need it: they read through the pack's shard readers and
publish through their batch's outbox."""

from ._bus import (
    MAX_GET_RECORDS,
    MAX_PUT_RECORDS,
    BusRecord,
    GetResult,
    KinesisBus,
    PutEntry,
    PutResult,
    ShardInfo,
    seq_key,
    shard_number,
)
from ._errors import BusError, ExpiredIteratorError, StreamNotFoundError, ThrottledError
from ._sender import (
    MAX_PARTITION_KEY_CHARS,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    PutRecordsSender,
    SenderStats,
    Sent,
    check_entry,
)

__all__ = [
    "MAX_GET_RECORDS",
    "MAX_PARTITION_KEY_CHARS",
    "MAX_PUT_RECORDS",
    "MAX_RECORD_BYTES",
    "MAX_REQUEST_BYTES",
    "BusError",
    "BusRecord",
    "ExpiredIteratorError",
    "GetResult",
    "KinesisBus",
    "PutEntry",
    "PutRecordsSender",
    "PutResult",
    "SenderStats",
    "Sent",
    "ShardInfo",
    "StreamNotFoundError",
    "ThrottledError",
    "check_entry",
    "seq_key",
    "shard_number",
]
