"""Load a profile: YAML, `${VAR:-default}` interpolation, env overrides, the embedded endpoint overlay.

Precedence, lowest first: the embedded substrate's endpoint overlay (written by `fraudrt substrate up`),
the profile YAML (null values do not override), then `FRAUDRT__SECTION__KEY` environment variables.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from ._model import Settings

ENV_OVERRIDE_PREFIX = "FRAUDRT__"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")


class ConfigError(Exception):
    """A profile could not be loaded; the message names the file and the key."""


def project_root() -> Path:
    """The project directory: `FRAUDRT_PROJECT_ROOT`, else the nearest parent holding `config/profiles`."""
    explicit = os.environ.get("FRAUDRT_PROJECT_ROOT")
    if explicit:
        return Path(explicit).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "config" / "profiles").is_dir():
            return candidate
    # An editable install: the package lives inside the checkout.
    return Path(__file__).resolve().parents[2]


def config_dir() -> Path:
    explicit = os.environ.get("FRAUDRT_CONFIG_DIR")
    return Path(explicit).resolve() if explicit else project_root() / "config"


def interpolate(text: str, source: str, env: Mapping[str, str] | None = None) -> str:
    """Replace `${VAR}` and `${VAR:-default}`; an unset `${VAR}` without default is an error."""
    environ = os.environ if env is None else env

    def repl(match: re.Match[str]) -> str:
        name, has_default, default = match.group(1), match.group(2), match.group(3)
        if name in environ:
            return environ[name]
        if has_default is not None:
            return default or ""
        raise ConfigError(f"{source}: environment variable {name} is not set and has no default")

    return _VAR.sub(repl, text)


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _blank_to_none(v) for k, v in value.items()}
    if value == "":
        return None
    return value


def _drop_none(value: Any) -> Any:
    """None means "unset": the struct default applies."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `top` onto `base`; None in `top` keeps the base value."""
    out = dict(base)
    for key, value in top.items():
        if value is None and key in out:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_OVERRIDE_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_OVERRIDE_PREFIX) :].split("__") if p]
        if not path:
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw) if raw else None
    return tree


def substrate_overlay_path(home: Path) -> Path:
    return home / "substrate" / "endpoints.json"


def load_settings(
    profile: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    directory: Path | None = None,
) -> Settings:
    """Resolve the settings of `profile` (default: `FRAUDRT_PROFILE`, else `embedded`)."""
    environ = os.environ if env is None else env
    name = profile or environ.get("FRAUDRT_PROFILE") or "embedded"
    path = (directory or config_dir() / "profiles") / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"profile {name!r} not found: {path} does not exist")
    try:
        loaded = yaml.safe_load(interpolate(path.read_text(), str(path), environ)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    tree = _merge({"profile": name}, _blank_to_none(loaded))
    tree = _merge(tree, _env_overrides(environ))

    root = project_root()
    home = Path(str(tree.get("home") or ".fraudrt"))
    home = home if home.is_absolute() else root / home
    tree["home"] = str(home)
    runs = Path(str(tree.get("runs_root") or "runs"))
    tree["runs_root"] = str(runs if runs.is_absolute() else root / runs)

    if tree.get("substrate", "embedded") == "embedded":
        overlay = substrate_overlay_path(home)
        if overlay.is_file():
            tree = _merge(json.loads(overlay.read_text()), tree)
    try:
        return msgspec.convert(_drop_none(tree), Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
