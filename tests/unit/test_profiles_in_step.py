"""The Docker profile (`local_parity`) fills the same settings as the embedded one, so a setting
added to one is not silently missing from the other (the compose profile cannot run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fraudrt.config import config_dir, interpolate, load_settings

pytestmark = pytest.mark.unit

# The embedded substrate writes these into its endpoints.json overlay (generated credentials);
# a compose profile has to state them.
FROM_EMBEDDED_OVERLAY = {"s3.access_key_id", "s3.secret_access_key", "kinesis.access_key_id",
                         "kinesis.secret_access_key"}


def _keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix.rstrip(".")}
    out: set[str] = set()
    for key, value in tree.items():
        out |= _keys(value, f"{prefix}{key}.")
    return out


def _filled(profile: str) -> set[str]:
    path = config_dir() / "profiles" / f"{profile}.yaml"
    return _keys(yaml.safe_load(interpolate(path.read_text(), str(path), {})))


def test_local_parity_fills_the_settings_embedded_fills(tmp_path: Path) -> None:
    embedded, parity = _filled("embedded"), _filled("local_parity")
    assert parity - FROM_EMBEDDED_OVERLAY == embedded, {
        "only in local_parity": sorted(parity - FROM_EMBEDDED_OVERLAY - embedded),
        "only in embedded": sorted(embedded - parity)}
    env = {"FRAUDRT_HOME": str(tmp_path / "home")}
    local = load_settings("local_parity", env=env)
    assert local.substrate == "compose" and local.s3.endpoint_url and local.kinesis.endpoint_url
    assert local.postgres.dsn and load_settings("embedded", env=env).substrate == "embedded"
