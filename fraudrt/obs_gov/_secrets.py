"""Secrets the platform holds, and a scan of run artifacts for any of them.

What counts as a secret: the S3 and Kinesis secret keys, the Postgres password (from the DSN), the
IG API keys. Findings name the secret's kind and where it was found, never its value. A secret
shorter than `MIN_LITERAL` characters (the local_parity defaults, e.g. `platform`) cannot be looked
for as a literal without matching ordinary words (`fraud-platform`); URLs carrying a password
(`scheme://user:password@host`) are found whatever their length.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from fraudrt.config import Settings

MIN_LITERAL: Final = 12
# scheme://user:password@host: a DSN or URL with its password in it.
_URL_PASSWORD: Final = re.compile(rb"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s/:@\"'<>]{1,128}:[^\s/@\"'<>]{1,256}@")
_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class Secret:
    kind: str
    value: str


@dataclass(frozen=True)
class Finding:
    where: str
    kind: str


def known_secrets(settings: Settings, *, ig_keys: Iterable[str] = ()) -> list[Secret]:
    out: list[Secret] = []
    for kind, value in (("s3_secret_access_key", settings.s3.secret_access_key),
                        ("kinesis_secret_access_key", settings.kinesis.secret_access_key)):
        if value:
            out.append(Secret(kind, value))
    if settings.postgres.dsn:
        password = urlsplit(settings.postgres.dsn).password
        if password:
            out.append(Secret("postgres_password", password))
    out += [Secret("ig_api_key", k) for k in ig_keys if k]
    return out


def weak_secrets(secrets: Iterable[Secret]) -> list[str]:
    """Kinds of secrets too short to scan for as literals (only URL passwords are found for them)."""
    return sorted({s.kind for s in secrets if len(s.value) < MIN_LITERAL})


class Scanner:
    """Finds secrets in bytes; remembers what it has found clean (by a caller's version key), so a
    scan that runs every few seconds reads only what is new or changed."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        literals = [s for s in secrets if len(s.value) >= MIN_LITERAL]
        self._literals = [(s.kind, s.value.encode()) for s in literals]
        self._overlap = max((len(v) for _k, v in self._literals), default=0) + 512
        self.clean: dict[str, Any] = {}

    def scan(self, data: bytes) -> list[str]:
        kinds = [kind for kind, value in self._literals if value in data]
        if _URL_PASSWORD.search(data):
            kinds.append("url_with_password")
        return sorted(set(kinds))

    def scan_file(self, path: Path) -> list[str]:
        kinds: set[str] = set()
        with open(path, "rb") as fh:
            tail = b""
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                kinds.update(self.scan(tail + chunk))
                tail = chunk[-self._overlap:]
        return sorted(kinds)


@dataclass
class ScanResult:
    scanned: int = 0
    skipped_unchanged: int = 0
    findings: list[Finding] = field(default_factory=list)


def scan_tree(scanner: Scanner, root: Path, result: ScanResult) -> None:
    """Every regular file under `root` (symlinks not followed)."""
    if not root.is_dir():
        return
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if not path.is_file() or path.is_symlink():
                continue
            version = (st.st_size, st.st_mtime_ns)
            key = f"file:{path}"
            if scanner.clean.get(key) == version:
                result.skipped_unchanged += 1
                continue
            try:
                kinds = scanner.scan_file(path)
            except OSError:
                continue  # removed or rotated while we walked: the next scan sees its successor
            result.scanned += 1
            if kinds:
                result.findings += [Finding(str(path), k) for k in kinds]
                scanner.clean.pop(key, None)
            else:
                scanner.clean[key] = version


async def scan_objects(scanner: Scanner, s3: Any, bucket: str, prefix: str, result: ScanResult,
                       *, concurrency: int = 16) -> None:
    """Every object under `prefix`; an object already found clean with the same ETag is not read again."""
    import anyio

    todo: list[tuple[str, str]] = []
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key, etag = obj["Key"], str(obj.get("ETag"))
            if scanner.clean.get(f"s3:{key}") == etag:
                result.skipped_unchanged += 1
            else:
                todo.append((key, etag))
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(key: str, etag: str) -> None:
        async with limiter:
            resp = await s3.get_object(Bucket=bucket, Key=key)
            async with resp["Body"] as body:
                data: bytes = await body.read()
        kinds = scanner.scan(data)
        result.scanned += 1
        if kinds:
            result.findings.extend(Finding(f"s3://{bucket}/{key}", k) for k in kinds)
        else:
            scanner.clean[f"s3:{key}"] = etag

    async with anyio.create_task_group() as tg:
        for key, etag in todo:
            tg.start_soon(one, key, etag)
