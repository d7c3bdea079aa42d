"""The object store the oracle reads and writes: S3 (aiobotocore) or a local directory, one interface.

The local store exists so the sort and pack logic run the same against a directory (unit tests,
benchmarks against local files) as against SeaweedFS/MinIO/S3. Keys are always ``/``-separated and
relative to the store root (the bucket, or the directory).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio
import msgspec
from botocore.exceptions import ClientError

from fraudrt.config import Settings
from fraudrt.runtime import classify
from fraudrt.substrate._clients import s3_client

from ._errors import OracleError

SHA256_META = "sha256"  # x-amz-meta-sha256: lets sync skip unchanged objects without downloading them
MULTIPART_THRESHOLD = 16 * 1024 * 1024  # x concurrency = the most file bytes held in memory at once
MULTIPART_PART_SIZE = 8 * 1024 * 1024
_COPY_CHUNK = 8 * 1024 * 1024


class ObjectInfo(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    size: int
    etag: str = ""
    sha256: str | None = None


class EngineRoot(msgspec.Struct, frozen=True, kw_only=True):
    """Where an engine world lives. ``uri`` is the canonical spelling every id is computed from."""

    kind: Literal["s3", "local"]
    uri: str
    bucket: str = ""
    prefix: str = ""  # key prefix inside the bucket / directory, no leading or trailing '/'
    local_dir: str = ""

    def key(self, rel: str) -> str:
        rel = rel.lstrip("/")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def rel(self, key: str) -> str:
        if self.prefix and key.startswith(self.prefix + "/"):
            return key[len(self.prefix) + 1 :]
        return key

    def uri_of(self, key: str) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}/{key}"
        return f"{self.uri.rstrip('/')}/{self.rel(key)}"


def parse_engine_root(value: str, settings: Settings) -> EngineRoot:
    """`s3://bucket/prefix`, a bare prefix (in the oracle bucket), or a local path / `file://` URI."""
    value = value.strip()
    if not value:
        raise OracleError(
            "ENGINE_ROOT_MISSING", "no engine run root given (--engine-run-root / ORACLE_ENGINE_RUN_ROOT)"
        )
    if value.startswith("s3://"):
        bucket, _, prefix = value[5:].partition("/")
        prefix = prefix.strip("/")
        if not bucket or not prefix:
            raise OracleError("ENGINE_ROOT_INVALID", f"engine run root needs a bucket and a prefix: {value!r}")
        return EngineRoot(kind="s3", uri=f"s3://{bucket}/{prefix}", bucket=bucket, prefix=prefix)
    if value.startswith("file://") or value.startswith("/") or value.startswith("."):
        path = Path(value[7:] if value.startswith("file://") else value).resolve()
        return EngineRoot(kind="local", uri=path.as_uri(), local_dir=str(path.parent), prefix=path.name)
    prefix = value.strip("/")
    bucket = settings.buckets.oracle
    return EngineRoot(kind="s3", uri=f"s3://{bucket}/{prefix}", bucket=bucket, prefix=prefix)


class ObjectStore(Protocol):
    async def list(self, prefix: str) -> list[ObjectInfo]: ...
    async def head(self, key: str) -> ObjectInfo | None: ...
    async def get_bytes(self, key: str) -> bytes | None: ...
    async def download(self, key: str, dest: Path) -> None: ...
    async def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> bool: ...
    async def upload_file(
        self, key: str, path: Path, *, metadata: Mapping[str, str] | None = None, limiter: anyio.CapacityLimiter
    ) -> None: ...
    async def delete(self, keys: Sequence[str]) -> None: ...
    def local_path(self, key: str) -> Path | None: ...


# A conditional PUT answered 409 ConditionalRequestConflict (or another transient failure) is tried
# again this many times, sleeping BACKOFF_S x 2^n (with jitter) in between: about 6 s in all.
PUT_ATTEMPTS = 6
PUT_BACKOFF_S = 0.2


def _object_exists(exc: ClientError) -> bool:
    """412 PreconditionFailed: an If-None-Match PUT found the object there. Only this means 'exists':
    409 ConditionalRequestConflict means a conflicting write of the key is in flight (retry)."""
    err = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return bool(err.get("Code") == "PreconditionFailed" or status == 412)


def _is_not_found(exc: ClientError) -> bool:
    err = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return err.get("Code") in ("404", "NoSuchKey", "NotFound") or status == 404


class S3Store:
    def __init__(self, client: Any, bucket: str) -> None:
        self._c = client
        self.bucket = bucket

    async def list(self, prefix: str) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        paginator = self._c.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []) or []:
                out.append(ObjectInfo(key=obj["Key"], size=int(obj["Size"]), etag=str(obj.get("ETag", "")).strip('"')))
        return sorted(out, key=lambda o: o.key)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = await self._c.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise
        meta = {k.lower(): v for k, v in (resp.get("Metadata") or {}).items()}
        return ObjectInfo(
            key=key,
            size=int(resp["ContentLength"]),
            etag=str(resp.get("ETag", "")).strip('"'),
            sha256=meta.get(SHA256_META),
        )

    async def get_bytes(self, key: str) -> bytes | None:
        try:
            resp = await self._c.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise
        async with resp["Body"] as body:
            data: bytes = await body.read()
        return data

    async def download(self, key: str, dest: Path) -> None:
        resp = await self._c.get_object(Bucket=self.bucket, Key=key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        async with resp["Body"] as body:
            with tmp.open("wb") as fh:
                while True:
                    chunk = await body.read(_COPY_CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
        os.replace(tmp, dest)

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> bool:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data, "ContentType": content_type}
        if metadata:
            kwargs["Metadata"] = dict(metadata)
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        for attempt in range(1, PUT_ATTEMPTS + 1):
            try:
                await self._c.put_object(**kwargs)
                return True
            except ClientError as exc:
                if if_none_match and _object_exists(exc):
                    return False
                failure = classify(exc)
                if not failure.transient:
                    raise
                if attempt == PUT_ATTEMPTS:
                    raise OracleError(
                        "STORE_WRITE_FAILED",
                        f"PUT s3://{self.bucket}/{key} still failing after {attempt} attempts ({failure.code}):"
                        " another writer of this key, or a store in trouble; rerun once it has settled",
                    ) from exc
                await anyio.sleep(PUT_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    async def upload_file(
        self, key: str, path: Path, *, metadata: Mapping[str, str] | None = None, limiter: anyio.CapacityLimiter
    ) -> None:
        size = (await anyio.Path(path).stat()).st_size
        meta = dict(metadata or {})
        if size < MULTIPART_THRESHOLD:
            async with limiter:
                data = await anyio.Path(path).read_bytes()
                await self._c.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=meta)
            return
        created = await self._c.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=meta)
        upload_id = created["UploadId"]
        n_parts = (size + MULTIPART_PART_SIZE - 1) // MULTIPART_PART_SIZE
        etags: dict[int, str] = {}

        async def one(number: int) -> None:
            # Each part holds a limiter slot only while in flight, so memory is bounded by
            # (limiter size x part size) however large the file is.
            async with limiter:
                with path.open("rb") as fh:
                    fh.seek((number - 1) * MULTIPART_PART_SIZE)
                    body = fh.read(MULTIPART_PART_SIZE)
                resp = await self._c.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                etags[number] = resp["ETag"]

        try:
            async with anyio.create_task_group() as tg:
                for number in range(1, n_parts + 1):
                    tg.start_soon(one, number)
            await self._c.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
            )
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    async def delete(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            resp = await self._c.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            errors = resp.get("Errors") or []
            if errors:
                raise OracleError("DELETE_FAILED", f"could not delete {len(errors)} objects, first: {errors[0]}")

    def local_path(self, key: str) -> Path | None:
        return None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_COPY_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class LocalStore:
    """A directory that behaves like a bucket (write-once via link(2), which fails if the name exists)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _p(self, key: str) -> Path:
        return self.root / key

    def local_path(self, key: str) -> Path | None:
        return self._p(key)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        base = self._p(prefix)
        # A prefix is a string prefix (like S3), not necessarily a directory.
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out.append(ObjectInfo(key=key, size=full.stat().st_size))
        return sorted(out, key=lambda o: o.key)

    async def head(self, key: str) -> ObjectInfo | None:
        p = self._p(key)
        if not p.is_file():
            return None
        return ObjectInfo(key=key, size=p.stat().st_size, sha256=_sha256_file(p))

    async def get_bytes(self, key: str) -> bytes | None:
        p = self._p(key)
        return p.read_bytes() if p.is_file() else None

    async def download(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(self._p(key).read_bytes())
        os.replace(tmp, dest)

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/octet-stream",
    ) -> bool:
        target = self._p(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            if if_none_match:
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, target)
                tmp = ""
        finally:
            if tmp:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return True

    async def upload_file(
        self, key: str, path: Path, *, metadata: Mapping[str, str] | None = None, limiter: anyio.CapacityLimiter
    ) -> None:
        async with limiter:
            await anyio.to_thread.run_sync(self._copy_in, key, path)

    def _copy_in(self, key: str, path: Path) -> None:
        # A file copy (no read into memory), published atomically under its name.
        target = self._p(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self._p(key).unlink()


@asynccontextmanager
async def open_store(
    root: EngineRoot, settings: Settings, *, max_pool_connections: int = 32
) -> AsyncIterator[ObjectStore]:
    if root.kind == "local":
        yield LocalStore(Path(root.local_dir))
        return
    async with s3_client(settings.s3, max_pool_connections=max_pool_connections) as client:
        yield S3Store(client, root.bucket)
