"""`oracle sync`: copy a local engine run root into the oracle store, idempotently and in parallel.

Each object carries the sha256 of its content in its metadata, so a rerun compares (size, sha256)
from a HEAD and skips what is already there, without downloading anything. Files over 16 MiB go up
as multipart uploads; every request in flight holds a slot of one capacity limiter, so memory and
connections stay bounded however many or however large the files are. After the copy the prefix is
listed and every expected key must be there with its size: a sync that cannot prove its result fails.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import anyio
import msgspec

from fraudrt.config import Settings

from ._errors import OracleError
from ._store import SHA256_META, EngineRoot, ObjectStore, open_store, parse_engine_root

# What a sync never copies: derived stream views and the pack's own files live only in the store.
_SKIP_TOP = ("stream_view",)
_SKIP_NAMES = ("_oracle_pack_manifest.json", "_SEALED.json")


class SyncRequest(msgspec.Struct, frozen=True, kw_only=True):
    source: str  # local engine run root (ORACLE_SYNC_SOURCE)
    engine_run_root: str  # destination (ORACLE_ENGINE_RUN_ROOT)
    concurrency: int = 8


class SyncProgress(msgspec.Struct, kw_only=True):
    files_total: int = 0
    files_done: int = 0
    files_uploaded: int = 0
    files_skipped: int = 0
    bytes_total: int = 0
    bytes_done: int = 0


class SyncResult(msgspec.Struct, frozen=True, kw_only=True):
    engine_run_root: str
    source: str
    files: int
    uploaded: int
    skipped: int
    bytes: int
    verified: int


def _size_and_sha256(path: Path) -> tuple[int, str]:
    return path.stat().st_size, _sha256(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def plan_files(source: Path) -> list[tuple[str, Path]]:
    """(relative key, local path) of every file to copy, in key order."""
    if not source.is_dir():
        raise OracleError("SYNC_SOURCE_MISSING", f"sync source {source} is not a directory")
    out: list[tuple[str, Path]] = []
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(source).as_posix()
        if rel.split("/", 1)[0] in _SKIP_TOP or rel in _SKIP_NAMES:
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue  # an engine writer's temp file, not part of the world
        out.append((rel, path))
    if not any(rel == "run_receipt.json" for rel, _ in out):
        raise OracleError("RUN_RECEIPT_MISSING", f"{source} has no run_receipt.json: not an engine run root")
    return out


def _plan(source_arg: str) -> tuple[Path, list[tuple[str, Path, int]], int]:
    source = Path(source_arg).expanduser().resolve()
    files = [(rel, p, p.stat().st_size) for rel, p in plan_files(source)]
    return source, files, sum(size for _, _, size in files)


async def _sync_into(
    store: ObjectStore,
    root: EngineRoot,
    files: list[tuple[str, Path, int]],
    concurrency: int,
    progress: SyncProgress,
    on_progress: Callable[[SyncProgress], None] | None,
) -> None:
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    files_limiter = anyio.CapacityLimiter(max(1, concurrency))

    async def one(rel: str, path: Path) -> None:
        # Two limiters: one bounds files being worked on (hashing, HEAD), the other bounds requests
        # in flight (a multipart file takes several of those without starving the rest).
        async with files_limiter:
            size, digest = await anyio.to_thread.run_sync(_size_and_sha256, path)
            key = root.key(rel)
            existing = await store.head(key)
            if existing is not None and existing.size == size and existing.sha256 == digest:
                progress.files_skipped += 1
            else:
                await store.upload_file(key, path, metadata={SHA256_META: digest}, limiter=limiter)
                progress.files_uploaded += 1
            progress.files_done += 1
            progress.bytes_done += size
            if on_progress is not None:
                on_progress(progress)

    async with anyio.create_task_group() as tg:
        for rel, path, _size in files:
            tg.start_soon(one, rel, path)


async def sync_engine_root(
    settings: Settings, request: SyncRequest, on_progress: Callable[[SyncProgress], None] | None = None
) -> SyncResult:
    source, files, total_bytes = await anyio.to_thread.run_sync(_plan, request.source)
    root = parse_engine_root(request.engine_run_root, settings)
    progress = SyncProgress(files_total=len(files), bytes_total=total_bytes)
    if on_progress is not None:
        on_progress(progress)
    async with open_store(root, settings, max_pool_connections=max(8, request.concurrency * 2)) as store:
        await _sync_into(store, root, files, request.concurrency, progress, on_progress)
        listed = {o.key: o.size for o in await store.list(root.key(""))}
    problems = []
    for rel, _path, local_size in files:
        size = listed.get(root.key(rel))
        if size is None:
            problems.append(f"{rel}: missing after sync")
        elif size != local_size:
            problems.append(f"{rel}: size {size} in the store, {local_size} locally")
    if problems:
        raise OracleError(
            "SYNC_VERIFY_FAILED", f"{len(problems)} objects wrong after sync: " + "; ".join(problems[:20])
        )
    return SyncResult(
        engine_run_root=root.uri,
        source=str(source),
        files=len(files),
        uploaded=progress.files_uploaded,
        skipped=progress.files_skipped,
        bytes=progress.bytes_total,
        verified=len(files),
    )
