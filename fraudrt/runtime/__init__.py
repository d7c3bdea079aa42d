"""The actor runtime: shard readers, batch handlers, Postgres checkpoints, the publish outbox, packs."""

from ._actor import Actor, Batch, ComponentContext, Service
from ._bus import BusRecord, GetResult, KinesisBus, PutEntry, PutResult, seq_key, shard_number
from ._checkpoint import load_checkpoints
from ._classify import Failure, FailureKind, classify, is_transient
from ._errors import (
    ActorMissingError,
    BusError,
    ExpiredIteratorError,
    FraudrtRuntimeError,
    PackError,
    StreamNotFoundError,
    ThrottledError,
)
from ._gc import configure_gc, freeze_heap
from ._inbox import Intake, content_hash, take_in
from ._manifest import ComponentSpec, PackManifest, list_manifests, resolve_manifest
from ._migrations import MigrationError, apply_migrations
from ._outbox import OutboxRelay, write_outbox
from ._pack import load_pack_state, pack_down, pack_kill, pack_status, pack_up
from ._pgcolumns import pack_columns, split_sql
from ._records import Emit, InboundRecord
from ._runs import (
    RunError,
    active_run_id,
    active_run_path,
    component_dir,
    new_run,
    operate_dir,
    pack_run_dir,
    platform_root,
    run_dir,
)
from ._sender import PutRecordsSender, SenderStats, Sent

__all__ = [
    "Actor",
    "ActorMissingError",
    "Batch",
    "BusError",
    "BusRecord",
    "ComponentContext",
    "ComponentSpec",
    "Emit",
    "ExpiredIteratorError",
    "Failure",
    "FailureKind",
    "FraudrtRuntimeError",
    "GetResult",
    "InboundRecord",
    "Intake",
    "KinesisBus",
    "MigrationError",
    "OutboxRelay",
    "PackError",
    "PackManifest",
    "PutEntry",
    "PutRecordsSender",
    "PutResult",
    "RunError",
    "SenderStats",
    "Sent",
    "Service",
    "StreamNotFoundError",
    "ThrottledError",
    "active_run_id",
    "active_run_path",
    "apply_migrations",
    "classify",
    "component_dir",
    "configure_gc",
    "content_hash",
    "freeze_heap",
    "is_transient",
    "list_manifests",
    "load_checkpoints",
    "load_pack_state",
    "new_run",
    "operate_dir",
    "pack_columns",
    "pack_down",
    "pack_kill",
    "pack_run_dir",
    "pack_status",
    "pack_up",
    "platform_root",
    "resolve_manifest",
    "run_dir",
    "seq_key",
    "shard_number",
    "split_sql",
    "take_in",
    "write_outbox",
]
