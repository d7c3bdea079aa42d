"""Component health and metrics files, and the atomic write that publishes them.

Layout (DESIGN §2, §5): ``<runs_root>/fraud-platform/<platform_run_id>/<component>/health/last_health.json``
and ``.../metrics/last_metrics.json``, where ``runs_root`` is the local ``runs`` directory. Readers
(degrade ladder, run reporter, operators) poll these files, so a write must never be observable
half-done: the reference rewrote them in place and readers saw torn JSON (rtdl §1.7).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Final

import msgspec

from ._formats import PlatformRunId, TsUtc
from ._pins import is_platform_run_id

_COMPONENT_RE: Final = re.compile(r"^[a-z][a-z0-9_]*\Z")
_ENCODER: Final = msgspec.json.Encoder()


class HealthState(enum.StrEnum):
    GREEN = "GREEN"
    AMBER = "AMBER"
    RED = "RED"


class HealthReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``last_health.json``. ``reasons`` are stable codes (``CHECKPOINT_OLD``), empty when GREEN."""

    component: str
    platform_run_id: PlatformRunId
    health_state: HealthState
    reasons: list[str] = msgspec.field(default_factory=list)
    generated_at_utc: TsUtc
    scenario_run_id: str | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class MetricsReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``last_metrics.json``: monotonic ``counters`` and point-in-time ``gauges`` (lags, ages, watermarks)."""

    component: str
    platform_run_id: PlatformRunId
    generated_at_utc: TsUtc
    scenario_run_id: str | None = None
    counters: dict[str, int | float] = msgspec.field(default_factory=dict)
    gauges: dict[str, int | float | str | None] = msgspec.field(default_factory=dict)


def _component_dir(runs_root: Path, platform_run_id: str, component: str) -> Path:
    # Both names become path segments: validating them keeps "../" or a typo'd run id from
    # writing outside the run's directory.
    if not is_platform_run_id(platform_run_id):
        raise ValueError(f"not a platform_run_id: {platform_run_id!r}")
    if _COMPONENT_RE.match(component) is None:
        raise ValueError(f"component must be a snake_case name like 'decision_fabric': {component!r}")
    return Path(runs_root) / "fraud-platform" / platform_run_id / component


def health_path(runs_root: Path, platform_run_id: str, component: str) -> Path:
    """``<runs_root>/fraud-platform/<platform_run_id>/<component>/health/last_health.json``."""
    return _component_dir(runs_root, platform_run_id, component) / "health" / "last_health.json"


def metrics_path(runs_root: Path, platform_run_id: str, component: str) -> Path:
    """``<runs_root>/fraud-platform/<platform_run_id>/<component>/metrics/last_metrics.json``."""
    return _component_dir(runs_root, platform_run_id, component) / "metrics" / "last_metrics.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """A health, metrics, status or report file as a dict; None if it is absent or not a JSON object
    (never half-written: writers use `write_json_atomic`)."""
    try:
        loaded = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` (a Struct or builtins) as JSON so readers see the old file or the new one, never a mix.

    Temp file in the same directory (``os.replace`` is only atomic within one filesystem), fsync
    before the rename so a crash cannot leave a renamed-but-empty file, fsync the directory after
    so the rename itself survives a crash. The temp file is removed on any failure.
    """
    path = Path(path)
    data = _ENCODER.encode(obj) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            # mkstemp creates 0600; these files are meant to be read by operators and other processes.
            os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
