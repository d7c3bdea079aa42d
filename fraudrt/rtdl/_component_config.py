"""A component's settings: its file under `config/rtdl/`, then the pack manifest's `options` over it.

The file is what an operator reads and edits (with the reasons for each number); a pack's
`options` override any key of it for that pack (tests and the parity closeout use that), merged
key by key. Unknown keys are an error, never ignored: a typo must not silently leave a default in
place.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from fraudrt.config import ConfigError, config_dir

T = TypeVar("T", bound=msgspec.Struct)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, recursively for mappings (a list or scalar replaces)."""
    out = dict(base)
    for key, value in over.items():
        held = out.get(key)
        out[key] = merge(held, value) if isinstance(held, Mapping) and isinstance(value, Mapping) else value
    return out


def load_component_config(cls: type[T], file_name: str, options: Mapping[str, Any] | None = None,
                          path: Path | None = None) -> T:
    """`cls` from `config/rtdl/<file_name>` (or `path`) with `options` merged over it."""
    source = path or config_dir() / "rtdl" / file_name
    try:
        document = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: not a mapping")
    try:
        return msgspec.convert(merge(document, options or {}), cls)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source} (+ pack options): {exc}") from None
