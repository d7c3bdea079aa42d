"""`fraudrt pack up|down|status`: one detached process per pack, tracked by PID + create time.

Pack-scoped control state: `runs/fraud-platform/operate/<pack_id>/state.json` (who runs, for which
run) and `status/last_status.json` (written by the pack process itself on a timer).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from fraudrt._daemon import ProcessRecord, is_alive, kill, spawn_detached, stop, tail
from fraudrt.config import Settings
from fraudrt.contracts import utc_now_ts, write_json_atomic

from ._errors import PackError
from ._manifest import PackManifest, check_components, resolve_manifest
from ._runs import active_run_id, operate_dir, pack_run_dir


class PackState(msgspec.Struct, kw_only=True):
    pack_id: str
    platform_run_id: str
    process: ProcessRecord
    started_at_utc: str
    profile: str


def _state_path(settings: Settings, pack_id: str) -> Path:
    return operate_dir(settings, pack_id) / "state.json"


def _status_path(settings: Settings, pack_id: str) -> Path:
    return operate_dir(settings, pack_id) / "status" / "last_status.json"


def load_pack_state(settings: Settings, pack_id: str) -> PackState | None:
    path = _state_path(settings, pack_id)
    if not path.is_file():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=PackState)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _read_status(settings: Settings, pack_id: str) -> dict[str, Any] | None:
    path = _status_path(settings, pack_id)
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    except (OSError, ValueError):
        return None


def pack_up(settings: Settings, name: str, *, wait: float = 60.0, platform_run_id: str | None = None,
            env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Start the pack for the active run (or `platform_run_id`); a no-op if it already runs for it.

    `env` is the child's whole environment (default: ours); it must resolve to the same settings.
    """
    manifest = resolve_manifest(name)
    # One `pack up` per pack at a time: two racing ones would both see no live process and start two.
    with _up_lock(settings, manifest.pack_id):
        return _pack_up(settings, manifest, wait=wait, platform_run_id=platform_run_id, env=env)


@contextlib.contextmanager
def _up_lock(settings: Settings, pack_id: str) -> Iterator[None]:
    path = operate_dir(settings, pack_id) / "up.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pack_up(settings: Settings, manifest: PackManifest, *, wait: float, platform_run_id: str | None,
             env: Mapping[str, str] | None) -> dict[str, Any]:
    _ready, missing, optional = check_components(manifest)
    if missing:
        raise PackError(f"pack {manifest.pack_id} cannot start; components not built yet: " + "; ".join(missing))
    run_id = platform_run_id or active_run_id(settings)
    current = load_pack_state(settings, manifest.pack_id)
    if current and is_alive(current.process):
        if current.platform_run_id != run_id:
            raise PackError(
                f"pack {manifest.pack_id} is running for {current.platform_run_id}, but the active run is now "
                f"{run_id}; stop it first (`fraudrt pack down {manifest.short_name}`)"
            )
        return {"pack_id": manifest.pack_id, "state": "already-running", "pid": current.process.pid,
                "platform_run_id": run_id, "missing_optional": optional}
    logs = pack_run_dir(settings, run_id, manifest.pack_id) / "logs"
    status_path = _status_path(settings, manifest.pack_id)
    status_path.unlink(missing_ok=True)
    record = spawn_detached(
        [sys.executable, "-m", "fraudrt.runtime.pack_main", manifest.pack_id, run_id],
        log_path=logs / "process.log", env=env,
    )
    state = PackState(pack_id=manifest.pack_id, platform_run_id=run_id, process=record,
                      started_at_utc=utc_now_ts(), profile=settings.profile)
    write_json_atomic(_state_path(settings, manifest.pack_id), msgspec.to_builtins(state))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        status = _read_status(settings, manifest.pack_id)
        if status and status.get("pid") == record.pid and status.get("state") == "running":
            return {"pack_id": manifest.pack_id, "state": "started", "pid": record.pid,
                    "platform_run_id": run_id, "missing_optional": optional}
        if not is_alive(record):
            raise PackError(f"pack {manifest.pack_id} exited during start; {logs}:\n"
                            f"{tail(logs / 'process.log')}\n{tail(logs / (manifest.short_name + '.log'))}")
        time.sleep(0.1)
    raise PackError(f"pack {manifest.pack_id} did not report running within {wait:.0f}s; see {logs}")


def pack_down(settings: Settings, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """SIGTERM (drain), wait, SIGKILL after `timeout`."""
    manifest = resolve_manifest(name)
    current = load_pack_state(settings, manifest.pack_id)
    if current is None or not is_alive(current.process):
        return {"pack_id": manifest.pack_id, "state": "not-running"}
    how = stop(current.process, sig=signal.SIGTERM, timeout=timeout)
    return {"pack_id": manifest.pack_id, "state": how, "pid": current.process.pid}


def pack_kill(settings: Settings, name: str) -> None:
    """SIGKILL, no drain (crash tests)."""
    manifest = resolve_manifest(name)
    current = load_pack_state(settings, manifest.pack_id)
    if current is not None:
        kill(current.process)


def pack_status(settings: Settings, name: str) -> dict[str, Any]:
    manifest = resolve_manifest(name)
    current = load_pack_state(settings, manifest.pack_id)
    alive = bool(current and is_alive(current.process))
    status = _read_status(settings, manifest.pack_id) if alive else None
    _ready, missing, optional = check_components(manifest)
    return {
        "pack_id": manifest.pack_id, "short_name": manifest.short_name,
        "state": (status or {}).get("state", "running") if alive else "stopped",
        "pid": current.process.pid if current else None,
        "platform_run_id": current.platform_run_id if current else None,
        "health_state": (status or {}).get("health_state") if alive else None,
        "components": (status or {}).get("components", {}),
        "readers": (status or {}).get("readers", {}),
        "outbox": (status or {}).get("outbox"),
        "backgrounds": (status or {}).get("backgrounds", {}),
        "missing": missing, "missing_optional": optional,
        "updated_at_utc": (status or {}).get("updated_at_utc"),
    }


def manifest_of(name: str) -> PackManifest:
    return resolve_manifest(name)
