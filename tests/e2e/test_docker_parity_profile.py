"""The `local_parity` profile on its own substrate: MinIO, LocalStack Kinesis (4.x) and Postgres in
containers (testcontainers), with the images and settings of `compose/parity.yaml`, reached only
through the profile's config interface. Bootstrap, then the 200-event closeout.

These need a Docker engine; where there is none (this project's machines) they skip with one line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fraudrt.config import load_settings, project_root

COMPOSE = project_root() / "compose" / "parity.yaml"


def _no_docker() -> str | None:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        return f"no Docker engine here ({type(exc).__name__}): the local_parity profile needs one"
    return None


NO_DOCKER = _no_docker()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(NO_DOCKER is not None, reason=NO_DOCKER or "")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_tcp(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"port {port} did not open within {timeout:.0f}s")


@pytest.fixture(scope="module")
def parity_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    minio = (DockerContainer(services["minio"]["image"]).with_command("server /data")
             .with_env("MINIO_ROOT_USER", "minio").with_env("MINIO_ROOT_PASSWORD", "minio123")
             .with_bind_ports(9000, None))
    localstack = DockerContainer(services["localstack"]["image"]).with_bind_ports(4566, None)
    for key, value in services["localstack"]["environment"].items():
        localstack = localstack.with_env(key, str(value))
    postgres = (DockerContainer(services["postgres"]["image"]).with_env("POSTGRES_USER", "platform")
                .with_env("POSTGRES_PASSWORD", "platform").with_env("POSTGRES_DB", "platform")
                .with_bind_ports(5432, None))
    started: list[Any] = []
    try:
        for container in (minio, localstack, postgres):
            container.start()
            started.append(container)
        wait_for_logs(localstack, "Ready.", timeout=180)
        wait_for_logs(postgres, "database system is ready to accept connections", timeout=120)
        ports = {"s3": int(minio.get_exposed_port(9000)), "kinesis": int(localstack.get_exposed_port(4566)),
                 "postgres": int(postgres.get_exposed_port(5432))}
        for port in ports.values():
            _wait_tcp(port)
        home = tmp_path_factory.mktemp("parity-home")
        yield {**os.environ, "FRAUDRT_PROFILE": "local_parity", "FRAUDRT_HOME": str(home / ".fraudrt"),
               "FRAUDRT_RUNS_ROOT": str(home / "runs"), "AWS_ACCESS_KEY_ID": "minio",
               "AWS_SECRET_ACCESS_KEY": "minio123", "S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}",
               "KINESIS_ENDPOINT_URL": f"http://127.0.0.1:{ports['kinesis']}", "IG_PORT": str(_free_port()),
               "DATABASE_URL": f"postgresql://platform:platform@127.0.0.1:{ports['postgres']}/platform",
               "PYTHONPATH": str(project_root())}
    finally:
        for container in reversed(started):
            container.stop()


def _fraudrt(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fraudrt", *args], env=env, cwd=project_root(),
                          capture_output=True, text=True, timeout=timeout)


def test_bootstrap_creates_the_buckets_and_streams_through_the_profile(parity_env: dict[str, str]) -> None:
    import anyio

    from fraudrt.substrate import kinesis_client, s3_client

    boot = _fraudrt(parity_env, "substrate", "bootstrap")
    assert boot.returncode == 0, boot.stderr
    settings = load_settings("local_parity", env=parity_env)

    async def check() -> tuple[set[str], set[str]]:
        async with s3_client(settings.s3) as s3:
            buckets = {b["Name"] for b in (await s3.list_buckets())["Buckets"]}
        async with kinesis_client(settings.kinesis) as kinesis:
            streams = set((await kinesis.list_streams())["StreamNames"])
        return buckets, streams

    buckets, streams = anyio.run(check)
    assert {settings.buckets.oracle, settings.buckets.platform} <= buckets
    assert set(settings.streams.all_names()) <= streams


def test_the_200_event_closeout_passes_on_the_docker_profile(parity_env: dict[str, str], tmp_path: Path) -> None:
    closeout = _fraudrt({**parity_env, "WSP_MAX_EVENTS_PER_OUTPUT": "200"}, "parity", "--events", "200",
                        timeout=1800)
    assert closeout.returncode == 0, closeout.stdout[-6000:] + closeout.stderr[-2000:]
