"""Pack manifests (`packs/<pack_id>.yaml`): which components share one process and event loop."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import msgspec
import yaml

from fraudrt.config import project_root

from ._actor import Component
from ._errors import ActorMissingError, PackError


class ComponentSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    entry: str  # "package.module:ClassName"
    optional: bool = False
    # Log file name under logs/ (the seed names some: wsp_ready_consumer, ig_service).
    log: str | None = None
    options: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def log_name(self) -> str:
        return self.log or self.name


class PackManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pack_id: str
    short_name: str
    description: str = ""
    components: list[ComponentSpec]
    runtime: dict[str, Any] = msgspec.field(default_factory=dict)


def packs_dir() -> Path:
    """`FRAUDRT_PACKS_DIR` if set (tests use their own manifests), else `<project>/packs`."""
    explicit = os.environ.get("FRAUDRT_PACKS_DIR")
    return Path(explicit).resolve() if explicit else project_root() / "packs"


def list_manifests() -> list[PackManifest]:
    return [load_manifest_file(p) for p in sorted(packs_dir().glob("*.yaml"))]


def load_manifest_file(path: Path) -> PackManifest:
    try:
        return msgspec.convert(yaml.safe_load(path.read_text()), PackManifest)
    except (msgspec.ValidationError, yaml.YAMLError) as exc:
        raise PackError(f"{path}: {exc}") from exc


def resolve_manifest(name: str) -> PackManifest:
    """A pack by id (`local_parity_rtdl_core_v0`) or short name (`rtdl_core`)."""
    manifests = list_manifests()
    for manifest in manifests:
        if name in (manifest.pack_id, manifest.short_name):
            return manifest
    known = ", ".join(f"{m.short_name} ({m.pack_id})" for m in manifests) or "none"
    raise PackError(f"unknown pack {name!r}; known packs: {known}")


def load_component_class(spec: ComponentSpec) -> type[Component]:
    module_name, _, attr = spec.entry.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ActorMissingError(f"{spec.name}: module {module_name} does not exist yet") from exc
        raise
    except AttributeError as exc:
        raise ActorMissingError(f"{spec.name}: {module_name} has no {attr}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Component)):
        raise PackError(f"{spec.name}: {spec.entry} is not an Actor or Service")
    return cls


def check_components(manifest: PackManifest) -> tuple[list[ComponentSpec], list[str], list[str]]:
    """(loadable specs, missing required names with reasons, missing optional names with reasons)."""
    ready: list[ComponentSpec] = []
    missing: list[str] = []
    optional: list[str] = []
    for spec in manifest.components:
        try:
            load_component_class(spec)
            ready.append(spec)
        except ActorMissingError as exc:
            (optional if spec.optional else missing).append(str(exc))
    return ready, missing, optional
