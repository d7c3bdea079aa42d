"""One embedded substrate per test session, in its own state directory and ports.

Tests isolate themselves by a fresh platform_run_id and, where streams must be private, by a
per-test stream prefix (`private_streams`), never by restarting servers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from fraudrt.config import Settings, load_settings, project_root

ROOT = project_root()


@dataclass(frozen=True)
class Substrate:
    settings: Settings
    env: dict[str, str]
    home: Path

    def settings_for(self, **env: str) -> Settings:
        """Settings of the same substrate with extra environment (e.g. a stream prefix)."""
        return load_settings("embedded", env={**os.environ, **self.env, **env})


@pytest.fixture(scope="session")
def substrate(request: pytest.FixtureRequest) -> Iterator[Substrate]:
    from fraudrt.substrate import bootstrap, down, up

    # Not pytest's tmp dirs: those are 0700, and the postgres OS user (CI runs as root) must reach the cluster.
    home = Path(tempfile.mkdtemp(prefix="fraudrt-test-"))
    os.chmod(home, 0o755)
    env = {
        "FRAUDRT_HOME": str(home),
        "FRAUDRT_RUNS_ROOT": str(home / "runs"),
        "FRAUDRT_PROFILE": "embedded",
        "FRAUDRT_PROJECT_ROOT": str(ROOT),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = load_settings("embedded")
    try:
        anyio.run(lambda: up(settings, fast_pg=True))
        settings = load_settings("embedded")
        anyio.run(lambda: bootstrap(settings))
        yield Substrate(settings=settings, env=env, home=home)
    finally:
        down(load_settings("embedded"), purge=True)
        shutil.rmtree(home, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def settings(substrate: Substrate) -> Settings:
    return substrate.settings


@pytest.fixture
async def private_streams(substrate: Substrate) -> Settings:
    """Settings whose streams carry a unique prefix, created (1 shard) for this test only."""
    from fraudrt.substrate import bootstrap

    prefix = f"t{uuid.uuid4().hex[:8]}-"
    scoped = substrate.settings_for(FRAUDRT_STREAM_PREFIX=prefix)
    await bootstrap(scoped)
    return scoped
