"""`oracle stream-sort` per output: idempotency gate, download, bounded sort, upload, manifest, receipt.

Commit protocol (one output, view prefix ``V = <engine_root>/stream_view/ts_utc/output_id=<id>/``):

1. ``V/_stream_sort_receipt.json`` exists:
   - it matches this input (status OK, same stream_view_id, output_id, source_locator_digest, source
     objects with sizes/etags, sort keys, granularity) and the parts listed under V are exactly the
     receipt's parts (name and size) -> **skip**;
   - it matches but the parts differ -> ``STREAM_VIEW_CORRUPT`` (a committed view is never silently
     rewritten; delete V to rebuild);
   - it differs -> ``STREAM_RECEIPT_CONFLICT`` naming the fields that differ.
2. No receipt but objects under V: a crashed or failed build. Nothing without a receipt was ever
   reported done, so the stale objects are deleted and the view is rebuilt.
3. Build: parts go straight to their final names ``part-NNNNNN.parquet`` (no rename/copy step);
   then the listing is checked against what was written; then ``_stream_view_manifest.json``; then
   the receipt, LAST, with ``If-None-Match: *``. The receipt is the commit marker: readers and reruns
   trust a view only when it exists, and it carries the manifest's sha256, binding the two.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import (
    DEFAULT_STREAM_VIEW_SORT_KEYS,
    source_locator_digest,
    stream_view_id,
    utc_now_ts,
)
from fraudrt.engine import load_catalogue

from ._errors import OracleConflict, OracleError
from ._sort import PartWritten, SortConfig, SortStats, SourceFile, sort_sources
from ._store import EngineRoot, ObjectInfo, ObjectStore, open_store, parse_engine_root
from ._world import Mode, WorldKey, list_sources, outputs_for_mode, read_receipt, stream_view_prefix, world_key

# The part uploads run beside the sort: UPLOAD_SLOTS multipart pieces (8 MiB) or one whole part under
# the 16 MiB multipart threshold in flight, plus the client's copies while signing and sending.
UPLOAD_SLOTS = 2
UPLOAD_RESERVED_BYTES = 48 * 1024**2
RECEIPT = "_stream_sort_receipt.json"
MANIFEST = "_stream_view_manifest.json"
PARTITION_GRANULARITY = "flat"
VIEW_VERSION = "v1"


class StreamSortRequest(msgspec.Struct, frozen=True, kw_only=True):
    engine_run_root: str
    scenario_id: str
    mode: Mode = "fraud"
    output_ids: tuple[str, ...] = ()  # empty: every output the mode needs
    stream_view_root: str | None = None
    memory_mb: int = 2048
    rows_per_part: int = 1_000_000
    row_group_rows: int = 131_072
    work_dir: str | None = None  # local scratch (source copies, spill, staged parts)
    writer_threads: int = 2
    force_external: bool = False


class SourceRef(msgspec.Struct, frozen=True, kw_only=True):
    uri: str
    size: int
    etag: str = ""


class PartRef(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # relative to the view prefix: part-000000.parquet
    rows: int
    bytes: int
    sha256: str
    first_ts_utc: str
    last_ts_utc: str


class ViewStats(msgspec.Struct, frozen=True, kw_only=True):
    row_count: int
    hash_sum: str
    hash_mix: str
    min_ts_utc: str = ""
    max_ts_utc: str = ""


class StreamViewManifest(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    stream_view_id: str
    engine_run_root: str
    stream_view_root: str
    engine_run_id: str
    scenario_id: str
    output_id: str
    world_key: WorldKey
    output_ids: list[str]
    sort_keys: list[str]
    partition_granularity: str
    source_locator_digest: str
    attempt_id: str
    row_count: int
    min_ts_utc: str
    max_ts_utc: str
    parts: list[PartRef]
    created_utc: str


class StreamSortReceipt(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    status: str
    stream_view_id: str
    engine_run_root: str
    stream_view_root: str
    output_id: str
    output_ids: list[str]
    sort_keys: list[str]
    partition_granularity: str
    source_locator_digest: str
    sources: list[SourceRef]
    raw_stats: ViewStats
    sorted_stats: ViewStats
    checksum_algo: str
    parts: list[PartRef]
    manifest_sha256: str
    attempt_id: str
    strategy: str
    memory_budget_mb: int
    rows_per_part: int
    spill_bytes: int
    elapsed_seconds: float
    created_utc: str


class OutputResult(msgspec.Struct, frozen=True, kw_only=True):
    output_id: str
    status: str  # SORTED | SKIPPED
    stream_view_id: str
    stream_view_root: str
    rows: int
    parts: int
    rebuilt_partial: bool = False
    stale_objects_deleted: int = 0
    strategy: str = ""
    elapsed_seconds: float = 0.0


ProgressFn = Callable[[dict[str, Any]], None]

_MATCH_FIELDS = (
    "stream_view_id",
    "output_id",
    "source_locator_digest",
    "sources",
    "sort_keys",
    "partition_granularity",
)


def _json(obj: Any) -> bytes:
    return msgspec.json.encode(obj) + b"\n"


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else group


def _for_output(exc: BaseException, output_id: str) -> BaseException:
    """An error of the sort, named after the output it concerns (the sort itself knows files, not outputs)."""
    if isinstance(exc, OracleError) and not exc.message.startswith(output_id):
        named = type(exc)(exc.code, f"{output_id}: {exc.message}")
        named.__cause__ = exc.__cause__
        return named.with_traceback(exc.__traceback__)
    return exc


def resolve_outputs(request: StreamSortRequest) -> tuple[str, ...]:
    if request.output_ids:
        known = set(load_catalogue().output_ids)
        unknown = [o for o in request.output_ids if o not in known]
        if unknown:
            raise OracleError("OUTPUT_UNKNOWN", f"not in the engine catalogue: {unknown}")
        return request.output_ids
    return outputs_for_mode(request.mode)


def _receipt_mismatch(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    diffs = [k for k in _MATCH_FIELDS if found.get(k) != expected.get(k)]
    if found.get("status") != "OK":
        diffs.append("status")
    return diffs


async def _check_existing(
    store: ObjectStore, prefix: str, expected: dict[str, Any], uri: str
) -> tuple[str, list[ObjectInfo], dict[str, Any] | None]:
    """('skip', …, receipt) | ('build', stale objects, None); raises on conflict or corruption."""
    listed = await store.list(prefix)
    raw = await store.get_bytes(prefix + RECEIPT)
    if raw is None:
        return "build", listed, None
    try:
        found = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise OracleConflict(
            "STREAM_RECEIPT_INVALID", f"{uri}{RECEIPT} is not JSON: delete the view to rebuild"
        ) from exc
    diffs = _receipt_mismatch(found if isinstance(found, dict) else {}, expected)
    if diffs:
        detail = "; ".join(f"{k}: receipt {found.get(k)!r:.120} != input {expected.get(k)!r:.120}" for k in diffs)
        raise OracleConflict(
            "STREAM_RECEIPT_CONFLICT",
            f"{uri} was built from a different input ({detail}); delete the view or use a new engine run root",
        )
    want = {p["name"]: p["bytes"] for p in found.get("parts", [])}
    have = {o.key[len(prefix) :]: o.size for o in listed if o.key.endswith(".parquet")}
    if want != have:
        missing = sorted(set(want) - set(have))[:5]
        extra = sorted(set(have) - set(want))[:5]
        resized = sorted(k for k in set(want) & set(have) if want[k] != have[k])[:5]
        raise OracleError(
            "STREAM_VIEW_CORRUPT",
            f"{uri} has a valid receipt but its parts differ (missing {missing}, extra {extra}, resized {resized});"
            " delete the view prefix to rebuild it",
        )
    return "skip", listed, found


async def _download_sources(
    store: ObjectStore, root: EngineRoot, objs: list[ObjectInfo], dest: Path, concurrency: int = 4
) -> list[SourceFile]:
    files: list[SourceFile] = []
    todo: list[tuple[ObjectInfo, Path]] = []
    for i, o in enumerate(objs):
        local = store.local_path(o.key)
        if local is not None:
            files.append(SourceFile(path=str(local), name=root.uri_of(o.key)))
        else:
            path = dest / f"src-{i:06d}.parquet"
            todo.append((o, path))
            files.append(SourceFile(path=str(path), name=root.uri_of(o.key)))
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(o: ObjectInfo, path: Path) -> None:
        async with limiter:
            await store.download(o.key, path)

    async with anyio.create_task_group() as tg:
        for o, path in todo:
            tg.start_soon(one, o, path)
    return files


async def sort_output(
    store: ObjectStore,
    root: EngineRoot,
    request: StreamSortRequest,
    output_id: str,
    on_progress: ProgressFn,
) -> OutputResult:
    started = time.monotonic()
    catalogue = load_catalogue()
    spec = catalogue.output(output_id)
    receipt = await read_receipt(store, root)
    wk = world_key(receipt, request.scenario_id)
    objs = await list_sources(store, root, spec, receipt, request.scenario_id)
    if not objs:
        raise OracleError(
            "OUTPUT_PATHS_EMPTY",
            f"{output_id}: no parquet under {root.uri}/{spec.path_template} (was the world synced?)",
        )
    uris = [root.uri_of(o.key) for o in objs]
    sources = [SourceRef(uri=u, size=o.size, etag=o.etag) for u, o in zip(uris, objs, strict=True)]
    sort_keys = list(DEFAULT_STREAM_VIEW_SORT_KEYS)
    svid = stream_view_id(
        engine_run_root=root.uri,
        scenario_id=request.scenario_id,
        output_id=output_id,
        sort_keys=sort_keys,
        partition_granularity=PARTITION_GRANULARITY,
    )
    sld = source_locator_digest(uris)
    prefix = stream_view_prefix(root, output_id, request.stream_view_root)
    view_uri = root.uri_of(prefix)
    expected = {
        "stream_view_id": svid,
        "output_id": output_id,
        "source_locator_digest": sld,
        "sources": msgspec.to_builtins(sources),
        "sort_keys": sort_keys,
        "partition_granularity": PARTITION_GRANULARITY,
    }
    decision, stale, found = await _check_existing(store, prefix, expected, view_uri)
    if decision == "skip":
        assert found is not None
        on_progress({"output_id": output_id, "phase": "skipped", "rows_done": 0, "rows_total": 0})
        return OutputResult(
            output_id=output_id,
            status="SKIPPED",
            stream_view_id=svid,
            stream_view_root=view_uri,
            rows=int(found["sorted_stats"]["row_count"]),
            parts=len(found["parts"]),
            strategy=str(found.get("strategy", "")),
        )
    if stale:
        # A build that never wrote its receipt: not a view, whatever it contains. Remove it first so
        # no stale part can survive next to the new ones.
        on_progress({"output_id": output_id, "phase": "clean_partial", "rows_done": 0, "rows_total": len(stale)})
        await store.delete([o.key for o in stale])

    attempt_id = uuid.uuid4().hex
    scratch_parent = Path(request.work_dir) if request.work_dir else None
    if scratch_parent is not None:
        scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"stream-sort-{output_id}-", dir=scratch_parent))
    try:
        on_progress({"output_id": output_id, "phase": "download", "rows_done": 0, "rows_total": 0})
        files = await _download_sources(store, root, objs, scratch / "src")
        cfg = SortConfig(
            work_dir=str(scratch),
            memory_budget_bytes=request.memory_mb * 1024 * 1024,
            reserved_bytes=UPLOAD_RESERVED_BYTES,
            rows_per_part=request.rows_per_part,
            row_group_rows=request.row_group_rows,
            ts_column=spec.ts_column,
            writer_threads=request.writer_threads,
            force_external=request.force_external,
        )
        parts: list[PartRef] = []
        send, recv = anyio.create_memory_object_stream[PartWritten](2)

        upload_slots = anyio.CapacityLimiter(UPLOAD_SLOTS)

        async def uploader() -> None:
            async with recv:
                async for part in recv:
                    path = Path(part.path)
                    name = f"part-{part.index:06d}.parquet"
                    # Streamed from the file (multipart over 16 MiB), never read whole: the uploads'
                    # memory is the fixed UPLOAD_RESERVED_BYTES inside the job's budget.
                    await store.upload_file(
                        prefix + name,
                        path,
                        metadata={"sha256": part.sha256, "attempt_id": attempt_id},
                        limiter=upload_slots,
                    )
                    await anyio.Path(path).unlink()
                    parts.append(
                        PartRef(
                            name=name,
                            rows=part.rows,
                            bytes=part.bytes,
                            sha256=part.sha256,
                            first_ts_utc=part.first_ts,
                            last_ts_utc=part.last_ts,
                        )
                    )

        def on_part(part: PartWritten) -> None:
            # Called on the sort thread; blocks it when two parts wait for upload (backpressure).
            anyio.from_thread.run(send.send, part)

        def progress(phase: str, done: int, total: int) -> None:
            anyio.from_thread.run_sync(
                on_progress, {"output_id": output_id, "phase": phase, "rows_done": done, "rows_total": total}
            )

        def run_sort() -> SortStats:
            try:
                return sort_sources(files, scratch / "parts", cfg, on_part, progress)
            finally:
                anyio.from_thread.run_sync(send.close)

        stats: SortStats | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(uploader)
                stats = await anyio.to_thread.run_sync(run_sort)
        except BaseExceptionGroup as group:
            # The sort and its uploader are one step: a failure of either is this output's failure (an
            # OracleError with its code), not a group of one.
            raise _for_output(_sole(group), output_id) from None
        except OracleError as exc:
            raise _for_output(exc, output_id) from None
        assert stats is not None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    parts.sort(key=lambda p: p.name)
    listed = {o.key[len(prefix) :]: o.size for o in await store.list(prefix)}
    wrong = [p.name for p in parts if listed.get(p.name) != p.bytes]
    extra = sorted(set(listed) - {p.name for p in parts})
    if wrong or extra:
        raise OracleError(
            "STREAM_VIEW_WRITE_MISMATCH", f"{view_uri}: parts wrong after upload {wrong[:5]}, unexpected {extra[:5]}"
        )
    manifest = StreamViewManifest(
        version=VIEW_VERSION,
        stream_view_id=svid,
        engine_run_root=root.uri,
        stream_view_root=view_uri,
        engine_run_id=receipt.run_id,
        scenario_id=request.scenario_id,
        output_id=output_id,
        world_key=wk,
        output_ids=[output_id],
        sort_keys=sort_keys,
        partition_granularity=PARTITION_GRANULARITY,
        source_locator_digest=sld,
        attempt_id=attempt_id,
        row_count=stats.rows_out,
        min_ts_utc=stats.min_ts,
        max_ts_utc=stats.max_ts,
        parts=parts,
        created_utc=utc_now_ts(),
    )
    manifest_bytes = _json(manifest)
    await store.put_bytes(prefix + MANIFEST, manifest_bytes, content_type="application/json")
    raw_stats = stats.checksum_in.as_dict()
    sorted_stats = stats.checksum_out.as_dict()
    view_receipt = StreamSortReceipt(
        version=VIEW_VERSION,
        status="OK",
        stream_view_id=svid,
        engine_run_root=root.uri,
        stream_view_root=view_uri,
        output_id=output_id,
        output_ids=[output_id],
        sort_keys=sort_keys,
        partition_granularity=PARTITION_GRANULARITY,
        source_locator_digest=sld,
        sources=sources,
        raw_stats=ViewStats(
            row_count=int(raw_stats["row_count"]),
            hash_sum=str(raw_stats["hash_sum"]),
            hash_mix=str(raw_stats["hash_mix"]),
            min_ts_utc=stats.min_ts,
            max_ts_utc=stats.max_ts,
        ),
        sorted_stats=ViewStats(
            row_count=int(sorted_stats["row_count"]),
            hash_sum=str(sorted_stats["hash_sum"]),
            hash_mix=str(sorted_stats["hash_mix"]),
            min_ts_utc=stats.min_ts,
            max_ts_utc=stats.max_ts,
        ),
        checksum_algo=stats.checksum_algo,
        parts=parts,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        attempt_id=attempt_id,
        strategy=stats.strategy,
        memory_budget_mb=request.memory_mb,
        rows_per_part=request.rows_per_part,
        spill_bytes=stats.spill_bytes,
        elapsed_seconds=round(time.monotonic() - started, 3),
        created_utc=utc_now_ts(),
    )
    if not await store.put_bytes(
        prefix + RECEIPT, _json(view_receipt), if_none_match=True, content_type="application/json"
    ):
        # Another build committed between our check and now; it must have been of the same input.
        raise OracleConflict(
            "STREAM_RECEIPT_RACE", f"{view_uri}: a receipt appeared during this build; rerun to verify"
        )
    on_progress({"output_id": output_id, "phase": "done", "rows_done": stats.rows_out, "rows_total": stats.rows_out})
    return OutputResult(
        output_id=output_id,
        status="SORTED",
        stream_view_id=svid,
        stream_view_root=view_uri,
        rows=stats.rows_out,
        parts=len(parts),
        rebuilt_partial=bool(stale),
        stale_objects_deleted=len(stale),
        strategy=stats.strategy,
        elapsed_seconds=view_receipt.elapsed_seconds,
    )


async def stream_sort(
    settings: Settings, request: StreamSortRequest, on_progress: ProgressFn | None = None
) -> list[OutputResult]:
    """Sort every requested output (sequentially: each one gets the whole memory budget)."""
    root = parse_engine_root(request.engine_run_root, settings)
    outputs = resolve_outputs(request)
    notify = on_progress or (lambda _p: None)
    results: list[OutputResult] = []
    async with open_store(root, settings) as store:
        for i, output_id in enumerate(outputs):

            def tagged(p: dict[str, Any], i: int = i) -> None:
                notify({**p, "outputs_done": i, "outputs_total": len(outputs)})

            results.append(await sort_output(store, root, request, output_id, tagged))
    notify({"phase": "complete", "outputs_done": len(outputs), "outputs_total": len(outputs)})
    return results
