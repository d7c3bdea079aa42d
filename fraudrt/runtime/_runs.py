"""Platform run ids and the run-scoped local folders (`runs/fraud-platform/...`, the seed's layout)."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from fraudrt.config import Settings

_RUN_RE = re.compile(r"^platform_[0-9]{8}T[0-9]{6}Z$")


class RunError(Exception):
    pass


def platform_root(settings: Settings) -> Path:
    return Path(settings.runs_root) / "fraud-platform"


def active_run_path(settings: Settings) -> Path:
    return platform_root(settings) / "ACTIVE_RUN_ID"


def new_run(settings: Settings, now: datetime | None = None) -> str:
    """Mint `platform_YYYYMMDDTHHMMSSZ`, write ACTIVE_RUN_ID, create the run folder."""
    moment = now or datetime.now(UTC)
    run_id = "platform_" + moment.strftime("%Y%m%dT%H%M%SZ")
    root = platform_root(settings)
    (root / run_id).mkdir(parents=True, exist_ok=True)
    tmp = active_run_path(settings).with_suffix(".tmp")
    tmp.write_text(run_id + "\n")
    os.replace(tmp, active_run_path(settings))
    return run_id


def active_run_id(settings: Settings) -> str:
    """`PLATFORM_RUN_ID` if set, else the ACTIVE_RUN_ID file; an error if neither names a valid run."""
    explicit = os.environ.get("PLATFORM_RUN_ID")
    if explicit:
        run_id = explicit.strip()
        source = "PLATFORM_RUN_ID"
    else:
        path = active_run_path(settings)
        if not path.is_file():
            raise RunError(f"no active platform run: {path} does not exist (run `fraudrt run new`)")
        run_id = path.read_text().strip()
        source = str(path)
    if not _RUN_RE.match(run_id):
        raise RunError(f"{source} holds {run_id!r}, not a platform_YYYYMMDDTHHMMSSZ run id")
    return run_id


def run_dir(settings: Settings, platform_run_id: str) -> Path:
    return platform_root(settings) / platform_run_id


def component_dir(settings: Settings, platform_run_id: str, component: str) -> Path:
    return run_dir(settings, platform_run_id) / component


def operate_dir(settings: Settings, pack_id: str) -> Path:
    """Pack-scoped control state: `runs/fraud-platform/operate/<pack_id>/`."""
    return platform_root(settings) / "operate" / pack_id


def pack_run_dir(settings: Settings, platform_run_id: str, pack_id: str) -> Path:
    """Run-scoped pack logs/events: `runs/fraud-platform/<run>/operate/<pack_id>/`."""
    return run_dir(settings, platform_run_id) / "operate" / pack_id
