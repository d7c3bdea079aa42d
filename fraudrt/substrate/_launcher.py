"""`fraudrt substrate up|down|status` for the embedded profile: start, probe and stop by recorded PID.

All state lives under `<home>/substrate/`: `state.json` (PIDs, create times, ports), `credentials.json`
and `endpoints.json` (0600; the overlay `load_settings` merges), one folder of data and logs per server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from fraudrt._daemon import ProcessRecord, is_alive, port_in_use, spawn_detached, stop, tail
from fraudrt.config import Settings, substrate_overlay_path

from ._errors import SubstrateError
from ._services import ServiceSpec, kinesalite_spec, new_credentials, postgres_spec, seaweed_spec

SERVICE_ORDER = ("postgres", "kinesis", "s3")


class ServiceState(msgspec.Struct, kw_only=True):
    name: str
    endpoint: str
    ports: dict[str, int]
    process: ProcessRecord
    stop_signal: int
    stop_timeout: float


class SubstrateState(msgspec.Struct, kw_only=True):
    services: dict[str, ServiceState] = msgspec.field(default_factory=dict)


def state_dir(settings: Settings) -> Path:
    return Path(settings.home) / "substrate"


def _state_path(settings: Settings) -> Path:
    return state_dir(settings) / "state.json"


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def load_state(settings: Settings) -> SubstrateState:
    path = _state_path(settings)
    if not path.is_file():
        return SubstrateState()
    return msgspec.json.decode(path.read_bytes(), type=SubstrateState)


def _save_state(settings: Settings, state: SubstrateState) -> None:
    _write_private(_state_path(settings), msgspec.json.encode(state))


def _credentials(settings: Settings) -> dict[str, dict[str, str]]:
    path = state_dir(settings) / "credentials.json"
    if path.is_file():
        loaded: dict[str, dict[str, str]] = json.loads(path.read_text())
        return loaded
    creds = new_credentials()
    _write_private(path, json.dumps(creds).encode())
    return creds


def _specs(settings: Settings, state: SubstrateState, fast_pg: bool) -> dict[str, Callable[[], ServiceSpec]]:
    base = state_dir(settings)
    creds = _credentials(settings)

    def ports(name: str) -> dict[str, int] | None:
        # A restarted server keeps its ports, so endpoints stay valid for running clients.
        return state.services[name].ports if name in state.services else None

    return {
        "postgres": lambda: postgres_spec(base, creds["postgres"], ports("postgres"), fast=fast_pg),
        "kinesis": lambda: kinesalite_spec(base, creds["kinesis"], ports("kinesis")),
        "s3": lambda: seaweed_spec(base, creds["s3"], ports("s3")),
    }


async def _probe_http(endpoint: str) -> bool:
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session, \
                session.get(endpoint) as resp:
            return resp.status < 500
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


async def _probe_postgres(dsn: str, database: str) -> bool:
    import asyncpg

    admin = dsn.rsplit("/", 1)[0] + "/postgres"
    try:
        conn = await asyncpg.connect(admin, timeout=2)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
        return True
    except asyncpg.PostgresError:
        return False
    finally:
        await conn.close()


async def probe(spec_or_state: ServiceSpec | ServiceState, overlay: dict[str, Any] | None = None) -> bool:
    name = spec_or_state.name
    if name == "postgres":
        dsn = (overlay or {}).get("postgres", {}).get("dsn")
        if not dsn:
            return port_in_use(spec_or_state.ports["postgres"])
        return await _probe_postgres(dsn, dsn.rsplit("/", 1)[1])
    if name == "kinesis":
        return port_in_use(spec_or_state.ports["kinesis"])
    return await _probe_http(spec_or_state.endpoint)


def _overlay(settings: Settings) -> dict[str, Any]:
    path = substrate_overlay_path(Path(settings.home))
    return json.loads(path.read_text()) if path.is_file() else {}


def _start_missing(settings: Settings, state: SubstrateState, specs: dict[str, Callable[[], ServiceSpec]],
                   overlay: dict[str, Any], started: list[ServiceSpec], progress: Callable[[str], None]) -> None:
    for name in SERVICE_ORDER:
        current = state.services.get(name)
        if current and is_alive(current.process):
            progress(f"{name}: already running (pid {current.process.pid}) at {current.endpoint}")
            continue
        spec = specs[name]()
        busy = [p for p in spec.ports.values() if port_in_use(p)]
        if busy:
            raise SubstrateError(f"{name}: port(s) {busy} on 127.0.0.1 are taken by another process")
        log = state_dir(settings) / name / "server.log"
        if spec.user:
            log.parent.mkdir(parents=True, exist_ok=True)
        record = spawn_detached(spec.argv, log_path=log, env=spec.env, user=spec.user)
        state.services[name] = ServiceState(name=name, endpoint=spec.endpoint, ports=spec.ports,
                                            process=record, stop_signal=int(spec.stop_signal),
                                            stop_timeout=spec.stop_timeout)
        overlay.update(spec.overlay)
        started.append(spec)
        progress(f"{name}: starting (pid {record.pid}) at {spec.endpoint}")


async def up(settings: Settings, *, fast_pg: bool = False, timeout: float = 90.0,
             progress: Callable[[str], None] = lambda _m: None) -> SubstrateState:
    """Start every embedded server that is not already running; idempotent."""
    if settings.substrate != "embedded":
        raise SubstrateError(f"profile {settings.profile!r} uses substrate {settings.substrate!r}; "
                             "`substrate up` only starts the embedded one")
    state_dir(settings).mkdir(parents=True, exist_ok=True)
    state = load_state(settings)
    specs = _specs(settings, state, fast_pg)
    overlay = _overlay(settings)
    started: list[ServiceSpec] = []
    try:
        _start_missing(settings, state, specs, overlay, started, progress)
    finally:
        # Saved even when a later server fails to start: `down` must be able to stop what did start.
        _save_state(settings, state)
        _write_private(substrate_overlay_path(Path(settings.home)), json.dumps(overlay).encode())

    async def wait_ready(spec: ServiceSpec) -> None:
        deadline = time.monotonic() + timeout
        record = state.services[spec.name].process
        while time.monotonic() < deadline:
            if not is_alive(record):
                raise SubstrateError(f"{spec.name} exited during start; log {record.log_path}:\n"
                                     f"{tail(record.log_path)}")
            if await probe(spec, overlay):
                progress(f"{spec.name}: ready")
                return
            await asyncio.sleep(0.2)
        raise SubstrateError(f"{spec.name} not ready after {timeout:.0f}s; log {record.log_path}:\n"
                             f"{tail(record.log_path)}")

    await asyncio.gather(*(wait_ready(s) for s in started))
    return state


def down(settings: Settings, *, purge: bool = False, progress: Callable[[str], None] = lambda _m: None) -> None:
    """Stop every recorded server by PID (graceful, then SIGKILL); `purge` also deletes all state."""
    state = load_state(settings)
    for name in reversed(SERVICE_ORDER):
        svc = state.services.get(name)
        if svc is None:
            continue
        # With purge the data is thrown away, so a slow graceful stop buys nothing.
        how = stop(svc.process, sig=9 if purge else svc.stop_signal, timeout=0.5 if purge else svc.stop_timeout)
        progress(f"{name}: {how}")
    if purge:
        shutil.rmtree(state_dir(settings), ignore_errors=True)
    elif state.services:
        _save_state(settings, state)


async def status(settings: Settings) -> dict[str, Any]:
    """Each service: pid, endpoint, process alive, endpoint answering. Never includes secrets."""
    state = load_state(settings)
    overlay = _overlay(settings)
    services: dict[str, Any] = {}
    for name in SERVICE_ORDER:
        svc = state.services.get(name)
        if svc is None:
            services[name] = {"state": "absent"}
            continue
        alive = is_alive(svc.process)
        answering = alive and await probe(svc, overlay)
        services[name] = {
            "state": "running" if answering else ("starting" if alive else "stopped"),
            "pid": svc.process.pid, "endpoint": svc.endpoint, "alive": alive, "answering": answering,
            "log": svc.process.log_path,
        }
    healthy = all(s.get("state") == "running" for s in services.values())
    return {"profile": settings.profile, "substrate": settings.substrate, "healthy": healthy,
            "state_dir": str(state_dir(settings)), "services": services}
