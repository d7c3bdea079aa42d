"""Pack operations: start, stop and inspect pack processes, their manifests and state files, platform
run ids and the run-scoped folders, and the schema migrations a pack applies. This is what the CLI,
the closeout and operators' tools use; a component author needs none of it (`fraudrt.runtime`)."""

from ._checkpoint import load_checkpoints
from ._errors import ActorMissingError, PackError
from ._gc import configure_gc, freeze_heap
from ._manifest import ComponentSpec, PackManifest, list_manifests, resolve_manifest
from ._migrations import MigrationError, apply_migrations
from ._pack import PackState, load_pack_state, pack_down, pack_kill, pack_status, pack_up
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

__all__ = [
    "ActorMissingError",
    "ComponentSpec",
    "MigrationError",
    "PackError",
    "PackManifest",
    "PackState",
    "RunError",
    "active_run_id",
    "active_run_path",
    "apply_migrations",
    "component_dir",
    "configure_gc",
    "freeze_heap",
    "list_manifests",
    "load_checkpoints",
    "load_pack_state",
    "new_run",
    "operate_dir",
    "pack_down",
    "pack_kill",
    "pack_run_dir",
    "pack_status",
    "pack_up",
    "platform_root",
    "resolve_manifest",
    "run_dir",
]
