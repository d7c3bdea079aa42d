"""Environment conformance: live checks against the running platform, each PASS or FAIL with reasons.

The reference diffed three static profile files and never looked at the run (critique #22). Every
check here asks the running system: the endpoints answer, the buckets and streams exist as the
profile says, every pack is alive on this run with the same configuration digest, IG refuses a push
without a valid key, the local profiles listen on loopback only, and no run artifact holds a secret.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiohttp
import anyio
import asyncpg
import msgspec
import psutil

from fraudrt._daemon import ProcessRecord, is_alive
from fraudrt.config import Settings
from fraudrt.contracts import config_digest, utc_now_ts
from fraudrt.runtime.packs import list_manifests, load_pack_state, operate_dir, pack_status, platform_root, run_dir
from fraudrt.substrate import kinesis_client, load_state, s3_client

from ._secrets import Scanner, ScanResult, known_secrets, scan_objects, scan_tree, weak_secrets

Status = Literal["PASS", "FAIL"]
CHECK_IDS: Final = ("endpoints_reachable", "buckets_as_configured", "streams_as_configured",
                    "packs_alive_on_run", "config_digests_consistent", "ig_auth_enforced", "loopback_only",
                    "no_secrets_in_artifacts")
# A pack's status file is rewritten every 2 s; one older than this is a pack that stopped reporting.
STATUS_STALE_SECONDS: Final = 30.0
_TIMEOUT: Final = 5.0


class Check(msgspec.Struct, frozen=True, kw_only=True):
    check_id: str
    status: Status
    reasons: list[str] = msgspec.field(default_factory=list)
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class ConformanceReport(msgspec.Struct, frozen=True, kw_only=True):
    generated_at_utc: str
    platform_run_id: str
    profile: str
    status: Status
    checks: list[Check]
    config_digest: str
    elapsed_ms: float


def _check(check_id: str, reasons: list[str], **details: Any) -> Check:
    return Check(check_id=check_id, status="FAIL" if reasons else "PASS", reasons=reasons, details=details)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ig_base_url(settings: Settings) -> str:
    if settings.wsp.ig_url:
        parts = urlsplit(settings.wsp.ig_url)
        return f"{parts.scheme}://{parts.netloc}"
    return f"http://{settings.ig.host}:{settings.ig.port}"


class Conformance:
    """One checker per run; keeps its secret scanner between rounds, so a round reads only new files."""

    def __init__(self, settings: Settings, platform_run_id: str, *, ig_keys: list[str] | None = None) -> None:
        self.settings = settings
        self.run = platform_run_id
        self.digest = config_digest(msgspec.to_builtins(settings))
        self._ig_keys = ig_keys
        self._scanner: Scanner | None = None

    def _keys(self) -> list[str]:
        if self._ig_keys is None:
            from fraudrt.control_ingress.ingestion_gate import load_api_keys

            try:
                self._ig_keys = load_api_keys(self.settings)
            except Exception:
                self._ig_keys = []
        return self._ig_keys

    async def run_checks(self) -> ConformanceReport:
        started = time.monotonic()
        checks: list[Check] = []
        steps: list[tuple[str, Callable[[], Awaitable[Check]]]] = [
            ("endpoints_reachable", self.endpoints), ("buckets_as_configured", self.buckets),
            ("streams_as_configured", self.streams), ("packs_alive_on_run", self.packs),
            ("config_digests_consistent", self.digests), ("ig_auth_enforced", self.ig_auth),
            ("loopback_only", self.loopback), ("no_secrets_in_artifacts", self.secrets)]
        for check_id, step in steps:
            try:
                checks.append(await step())
            except Exception as exc:
                # A check that cannot run is a FAIL with its reason, never a crash of the checker.
                checks.append(_check(check_id, [f"check could not run: {_short(exc)}"]))
        status: Status = "PASS" if all(c.status == "PASS" for c in checks) else "FAIL"
        return ConformanceReport(generated_at_utc=utc_now_ts(), platform_run_id=self.run,
                                 profile=self.settings.profile, status=status, checks=checks,
                                 config_digest=self.digest,
                                 elapsed_ms=round((time.monotonic() - started) * 1000, 1))

    # ---------------------------------------------------------------- checks

    async def endpoints(self) -> Check:
        reasons: list[str] = []
        answered: dict[str, bool] = {}

        async def probe(name: str, fn: Callable[[], Awaitable[Any]]) -> None:
            try:
                with anyio.fail_after(_TIMEOUT):
                    await fn()
                answered[name] = True
            except Exception as exc:
                answered[name] = False
                reasons.append(f"{name} unreachable: {_short(exc)}")

        async def s3() -> None:
            async with s3_client(self.settings.s3, max_attempts=1, connect_timeout=3, read_timeout=3) as c:
                await c.list_buckets()

        async def kinesis() -> None:
            async with kinesis_client(self.settings.kinesis) as c:
                await c.list_streams(Limit=1)

        async def postgres() -> None:
            if not self.settings.postgres.dsn:
                raise RuntimeError("no DSN configured")
            conn = await asyncpg.connect(self.settings.postgres.dsn, timeout=_TIMEOUT)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close()

        async def ig() -> None:
            async with aiohttp.ClientSession() as http, http.get(f"{ig_base_url(self.settings)}/v1/ops/health") as r:
                await r.read()

        for name, fn in (("s3", s3), ("kinesis", kinesis), ("postgres", postgres), ("ingestion_gate", ig)):
            await probe(name, fn)
        return _check("endpoints_reachable", reasons, answered=answered)

    async def buckets(self) -> Check:
        reasons: list[str] = []
        wanted = [self.settings.buckets.oracle, self.settings.buckets.platform]
        async with s3_client(self.settings.s3, max_attempts=1, connect_timeout=3, read_timeout=5) as s3:
            for bucket in wanted:
                try:
                    await s3.head_bucket(Bucket=bucket)
                except Exception as exc:
                    reasons.append(f"bucket {bucket}: {_short(exc)}")
        return _check("buckets_as_configured", reasons, buckets=wanted)

    async def streams(self) -> Check:
        reasons: list[str] = []
        found: dict[str, Any] = {}
        want_shards = self.settings.kinesis.shard_count
        async with kinesis_client(self.settings.kinesis) as kinesis:
            for name in self.settings.streams.all_names():
                try:
                    summary = (await kinesis.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]
                except Exception as exc:
                    reasons.append(f"stream {name}: {_short(exc)}")
                    continue
                status, shards = summary.get("StreamStatus"), summary.get("OpenShardCount")
                found[name] = {"status": status, "open_shards": shards}
                if status != "ACTIVE":
                    reasons.append(f"stream {name} is {status}, not ACTIVE")
                if shards != want_shards:
                    reasons.append(f"stream {name} has {shards} open shard(s); the profile says {want_shards}")
        return _check("streams_as_configured", reasons, streams=found)

    def _pack_statuses(self) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for manifest in list_manifests():
            path = operate_dir(self.settings, manifest.pack_id) / "status" / "last_status.json"
            try:
                out[manifest.pack_id] = msgspec.json.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError):
                out[manifest.pack_id] = None
        return out

    async def packs(self) -> Check:
        reasons: list[str] = []
        seen: dict[str, Any] = {}
        statuses = self._pack_statuses()
        for manifest in list_manifests():
            pid = manifest.pack_id
            missing = pack_status(self.settings, pid)["missing"]
            if missing:
                reasons.append(f"{pid}: components not built: {'; '.join(missing)}")
            state = load_pack_state(self.settings, pid)
            if state is None:
                reasons.append(f"{pid}: never started (no state.json)")
                continue
            alive = is_alive(state.process)
            status = statuses.get(pid) or {}
            age = _age_seconds(status.get("updated_at_utc"))
            seen[pid] = {"alive": alive, "pid": state.process.pid, "platform_run_id": state.platform_run_id,
                         "state": status.get("state"), "status_age_s": age, "health_state": status.get("health_state")}
            if not alive:
                reasons.append(f"{pid}: not running (pid {state.process.pid})")
                continue
            if state.platform_run_id != self.run:
                reasons.append(f"{pid}: running for {state.platform_run_id}, not {self.run}")
            if status.get("platform_run_id") != self.run or status.get("state") != "running":
                reasons.append(f"{pid}: status says {status.get('state')} for {status.get('platform_run_id')}")
            if age is None or age > STATUS_STALE_SECONDS:
                reasons.append(f"{pid}: status not refreshed for {age if age is not None else '?'} s")
        return _check("packs_alive_on_run", reasons, packs=seen)

    async def digests(self) -> Check:
        """Every running pack reports the same configuration digest. The checker's own digest is
        shown beside them but is not the yardstick: a one-shot command may legitimately carry
        per-invocation settings (an engine run root for `sr ready`) that the packs do not."""
        reasons: list[str] = []
        digests: dict[str, str | None] = {}
        for pid, status in self._pack_statuses().items():
            state = load_pack_state(self.settings, pid)
            if status is None or state is None or not is_alive(state.process):
                continue  # packs_alive_on_run says why
            digests[pid] = status.get("config_digest")
            if digests[pid] is None:
                reasons.append(f"{pid}: its status records no config_digest (started by an older fraudrt?)")
        known = Counter(d for d in digests.values() if d)
        if len(known) > 1:
            majority, _n = known.most_common(1)[0]
            for pid, digest in sorted(digests.items()):
                if digest and digest != majority:
                    reasons.append(f"{pid}: config digest {digest[:12]} differs from the other packs' {majority[:12]}")
        if not digests:
            reasons.append("no running pack to compare")
        return _check("config_digests_consistent", reasons, packs=digests, this_checker=self.digest)

    async def ig_auth(self) -> Check:
        from fraudrt.control_ingress.ingestion_gate import API_KEY_HEADER

        reasons: list[str] = []
        base = ig_base_url(self.settings)
        seen: dict[str, int] = {}
        # A syntactically fine envelope: only the missing or wrong key may get it refused.
        body = {"event_id": "conformance-probe", "event_type": "conformance_probe", "schema_version": "v1",
                "ts_utc": utc_now_ts(), "platform_run_id": self.run, "payload": {}}
        wrong = "not-a-key-" + self.digest[:16]
        timeout = aiohttp.ClientTimeout(total=_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for name, method, path, headers in (
                    ("push_without_key", "POST", "/v1/ingest/push", {}),
                    ("push_with_wrong_key", "POST", "/v1/ingest/push", {API_KEY_HEADER: wrong}),
                    ("health_without_key", "GET", "/v1/ops/health", {})):
                async with http.request(method, base + path, json=body if method == "POST" else None,
                                        headers=headers) as resp:
                    await resp.read()
                    seen[name] = resp.status
                if seen[name] != 401:
                    reasons.append(f"{method} {path} ({name.replace('_', ' ')}) answered {seen[name]}, not 401")
            keys = self._keys()
            if keys:
                async with http.get(base + "/v1/ops/health", headers={API_KEY_HEADER: keys[0]}) as resp:
                    await resp.read()
                    seen["health_with_key"] = resp.status
                if resp.status == 401:
                    reasons.append("GET /v1/ops/health with the configured key answered 401: the key is not accepted")
        return _check("ig_auth_enforced", reasons, statuses=seen, ig=base)

    def _pids(self) -> dict[str, ProcessRecord]:
        procs: dict[str, ProcessRecord] = {}
        for manifest in list_manifests():
            state = load_pack_state(self.settings, manifest.pack_id)
            if state is not None and is_alive(state.process):
                procs[f"pack {manifest.pack_id}"] = state.process
        if self.settings.substrate == "embedded":
            for name, svc in load_state(self.settings).services.items():
                if is_alive(svc.process):
                    procs[f"substrate {name}"] = svc.process
        return procs

    async def loopback(self) -> Check:
        if self.settings.substrate == "none":
            return _check("loopback_only", [], skipped=f"profile {self.settings.profile} is not local")
        reasons: list[str] = []
        configured = {"ig.host": self.settings.ig.host,
                      "s3.endpoint_url": urlsplit(self.settings.s3.endpoint_url or "").hostname,
                      "kinesis.endpoint_url": urlsplit(self.settings.kinesis.endpoint_url or "").hostname,
                      "postgres.dsn": urlsplit(self.settings.postgres.dsn or "").hostname}
        for key, host in configured.items():
            if not _is_loopback(host):
                reasons.append(f"{key} points at {host!r}, not a loopback address")
        listening: dict[str, list[str]] = {}
        for name, record in self._pids().items():
            addrs: set[str] = set()
            try:
                procs = [psutil.Process(record.pid), *psutil.Process(record.pid).children(recursive=True)]
                for proc in procs:
                    for conn in proc.net_connections(kind="inet"):
                        if conn.status == psutil.CONN_LISTEN and conn.laddr:
                            addrs.add(f"{conn.laddr.ip}:{conn.laddr.port}")
            except (psutil.NoSuchProcess, psutil.AccessDenied) as exc:
                reasons.append(f"{name}: cannot read its sockets ({type(exc).__name__})")
                continue
            listening[name] = sorted(addrs)
            for addr in addrs:
                if not _is_loopback(addr.rsplit(":", 1)[0]):
                    reasons.append(f"{name} (pid {record.pid}) listens on {addr}, not loopback")
        return _check("loopback_only", reasons, configured=configured, listening=listening)

    async def secrets(self) -> Check:
        if self._scanner is None:
            secrets = known_secrets(self.settings, ig_keys=self._keys())
            self._scanner = Scanner(secrets)
            self._weak = weak_secrets(secrets)
        result = ScanResult()
        roots = [run_dir(self.settings, self.run), platform_root(self.settings) / "operate"]
        for root in roots:
            await anyio.to_thread.run_sync(scan_tree, self._scanner, Path(root), result)
        async with s3_client(self.settings.s3, max_attempts=2, connect_timeout=5, read_timeout=30) as s3:
            await scan_objects(self._scanner, s3, self.settings.buckets.platform, f"{self.run}/", result)
        reasons = [f"{f.kind} found in {f.where}" for f in result.findings[:50]]
        if len(result.findings) > 50:
            reasons.append(f"... and {len(result.findings) - 50} more")
        return _check("no_secrets_in_artifacts", reasons, scanned=result.scanned,
                      unchanged_since_last_scan=result.skipped_unchanged,
                      roots=[str(r) for r in roots] + [f"s3://{self.settings.buckets.platform}/{self.run}/"],
                      short_secrets_found_only_in_urls=self._weak)


def _age_seconds(ts: str | None) -> float | None:
    if not ts:
        return None
    from fraudrt.contracts import parse_ts_utc

    try:
        return round(time.time() - parse_ts_utc(ts).timestamp(), 1)
    except ValueError:
        return None
