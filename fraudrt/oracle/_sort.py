"""The bounded-memory sort behind `oracle stream-sort`: parquet files in, time-ordered parquet parts out.

Order: ``CAST(ts AS TIMESTAMP)``, then source file (in the order given, which the caller makes the
lexical order of the source URIs), then the row's position in that file. The (file, row) pair is
folded into one global row position ``pos`` (files' row counts come from the parquet footers), so the
key is ``(ts_us, pos)``: unique, hence a total order, hence one well-defined output.

Strategy (measured in bench/bench_oracle.py, see docs/perf/oracle.md):

- The input is read with pyarrow, low-cardinality string columns as dictionaries (they become polars
  Categoricals: reading, sorting and writing them moves 4-byte codes instead of strings, which made
  the whole job ~3x cheaper than plain strings). ts is parsed by Arrow's ISO-8601 cast (7x faster
  than polars' strptime on this format).
- If the estimated working set fits the memory budget: one in-memory sort.
- Otherwise a one-level *distribution* sort: pass 1 reads only the ts column and keeps every k-th
  key; quantiles of that sample cut the key space into B ranges sized to fit the budget; pass 2
  reads everything once and appends each row to its range's spill file (Arrow IPC on local disk);
  pass 3 sorts each range in memory and emits it. Ranges are disjoint and in key order, so the
  concatenation is sorted with no merge step, and each row is read from the source once and from
  spill once. A range that still came out too big (skew) is split again the same way.

Parts are cut at exactly ``rows_per_part`` rows (the last one shorter) and written with zstd,
statistics on and no stored Arrow schema, so readers see the source's parquet types (a Categorical
is written as a dictionary-encoded plain string column).

Integrity: an order-independent checksum over rows (``hash_rows`` summed mod 2^64, plus a non-linear
second sum) is taken over the rows as read from the sources and over the rows handed to the part
writer; they must be equal, as must the row counts. The checksum uses polars' row hash, which is
stable within one polars version only, so the receipt names the version; portable proof for
readers is the per-part sha256 in the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import queue
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._errors import OracleError

TS_KEY = "__fr_ts"
POS_KEY = "__fr_pos"
_BUCKET = "__fr_bucket"
_POS_BITS = 40  # pos < 2^40 rows; ts_us * 2^40 + pos fits an Int128 with room to spare
_HASH_SEED = 0x5EED_0F_0AC1E
_SAMPLE_TARGET = 400_000
_WORKING_SET_FACTOR = 3.0  # data + sorted copy + keys/encoder buffers, measured peak / data size
_DICT_MAX_RATIO = 0.05
_DICT_MAX_UNIQUE = 100_000


class SortConfig(msgspec.Struct, frozen=True, kw_only=True):
    work_dir: str
    memory_budget_bytes: int = 2 * 1024**3
    rows_per_part: int = 1_000_000
    row_group_rows: int = 131_072
    ts_column: str = "ts_utc"
    compression: str = "zstd"
    spill_compression: str = "lz4"  # "uncompressed" trades disk for a little CPU
    writer_threads: int = 2
    force_external: bool = False  # tests: exercise the spill path on small data


class SourceFile(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # a local file
    name: str  # the source URI (what the "filename" tie-breaker means)


class RowChecksum(msgspec.Struct, kw_only=True):
    rows: int = 0
    hash_sum: int = 0
    hash_mix: int = 0

    def add(self, df: pl.DataFrame) -> None:
        if df.height == 0:
            return
        h = df.hash_rows(seed=_HASH_SEED)
        hi = h // (2**32)
        lo = h % (2**32)
        self.rows += df.height
        self.hash_sum = (self.hash_sum + int(h.sum())) % 2**64
        self.hash_mix = (self.hash_mix + int((hi * lo).sum())) % 2**64

    def merge(self, other: RowChecksum) -> None:
        self.rows += other.rows
        self.hash_sum = (self.hash_sum + other.hash_sum) % 2**64
        self.hash_mix = (self.hash_mix + other.hash_mix) % 2**64

    def as_dict(self) -> dict[str, int | str]:
        # Strings: a uint64 does not survive every JSON reader (doubles lose precision past 2^53).
        return {"row_count": self.rows, "hash_sum": str(self.hash_sum), "hash_mix": str(self.hash_mix)}


class PartWritten(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    path: str
    rows: int
    bytes: int
    sha256: str
    first_ts: str
    last_ts: str


class SortStats(msgspec.Struct, kw_only=True):
    strategy: str = "in_memory"
    rows_in: int = 0
    rows_out: int = 0
    parts: int = 0
    units: int = 0
    max_unit_rows: int = 0
    spill_bytes: int = 0
    min_ts: str = ""
    max_ts: str = ""
    checksum_in: RowChecksum = msgspec.field(default_factory=RowChecksum)
    checksum_out: RowChecksum = msgspec.field(default_factory=RowChecksum)
    checksum_algo: str = f"polars-{pl.__version__}:hash_rows(seed={_HASH_SEED}):sum64+hi*lo64"


Progress = Callable[[str, int, int], None]


def _noop(_phase: str, _done: int, _total: int) -> None:
    return None


# --------------------------------------------------------------------------------------------------
# Reading sources
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    schema: pa.Schema
    offsets: tuple[int, ...]  # global pos of each file's first row
    rows: tuple[int, ...]
    dictionary_columns: tuple[str, ...]
    bytes_per_row: float
    max_row_group_rows: int


def _same_schema(a: pa.Schema, b: pa.Schema) -> bool:
    return bool(a.remove_metadata().equals(b.remove_metadata()))


def _plan(sources: Sequence[SourceFile], ts_column: str) -> _Plan:
    if not sources:
        raise OracleError("OUTPUT_PATHS_EMPTY", "no source parquet files")
    schema = pq.read_schema(sources[0].path)
    drift = [s.name for s in sources[1:] if not _same_schema(pq.read_schema(s.path), schema)]
    if drift:
        raise OracleError(
            "SCHEMA_DRIFT", f"{len(drift)} source files differ in schema from {sources[0].name}: {drift[:5]}"
        )
    if ts_column not in schema.names:
        raise OracleError("MISSING_TS_UTC", f"sources have no {ts_column!r} column (columns: {schema.names})")
    if TS_KEY in schema.names or POS_KEY in schema.names:
        raise OracleError("RESERVED_COLUMN", f"sources use a reserved column name ({TS_KEY}/{POS_KEY})")
    rows: list[int] = []
    offsets: list[int] = []
    total = 0
    max_rg = 1
    for s in sources:
        meta = pq.ParquetFile(s.path).metadata
        n = meta.num_rows
        max_rg = max([max_rg] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        offsets.append(total)
        rows.append(n)
        total += n
    if total >= 2**_POS_BITS:
        raise OracleError("OUTPUT_TOO_LARGE", f"{total} rows exceed the 2^{_POS_BITS} row positions of the sort key")
    # Pick dictionary columns from a sample: low-cardinality strings (world keys, enums, mostly-null ids).
    strings = [
        f.name
        for f in schema
        if f.name != ts_column and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
    ]
    sample_file = next((s for s, n in zip(sources, rows, strict=True) if n > 0), sources[0])
    pf = pq.ParquetFile(sample_file.path)
    dict_cols: list[str] = []
    bytes_per_row = 64.0
    if pf.metadata.num_rows > 0:
        sample = next(pf.iter_batches(batch_size=65_536))
        for name in strings:
            col = sample.column(name)
            uniq = len(pc.unique(col))
            if uniq <= _DICT_MAX_UNIQUE and uniq <= max(16, _DICT_MAX_RATIO * sample.num_rows):
                dict_cols.append(name)
        pf2 = pq.ParquetFile(sample_file.path, read_dictionary=dict_cols)
        sample2 = next(pf2.iter_batches(batch_size=65_536))
        df = pl.from_arrow(sample2)
        assert isinstance(df, pl.DataFrame)
        bytes_per_row = df.estimated_size() / max(1, df.height) + 16.0
    return _Plan(
        schema=schema,
        offsets=tuple(offsets),
        rows=tuple(rows),
        dictionary_columns=tuple(dict_cols),
        bytes_per_row=bytes_per_row,
        max_row_group_rows=max_rg,
    )


_CANONICAL_TS = "YYYY-MM-DDTHH:MM:SS.ffffffZ"


def _require_canonical(col: pa.ChunkedArray | pa.Array, source: str, ts_column: str, first_row: int) -> None:
    """Every ts string in the one canonical form (RFC 3339, UTC, `Z`, exactly 6 fractional digits).

    WSP merges the outputs' views by comparing these strings, and the sort orders by the instant; the
    two orders agree only when every value has the same form. A `+01:00` offset, 1-5 fractional digits
    or a missing `Z` parse to the right instant but sort wrongly as text, so they are refused here,
    with the row to fix. The shape is checked cheaply (length, `T`, `.`, `Z`); Arrow's ISO-8601 cast
    that follows checks the digits."""
    ok = pc.and_(
        pc.and_(pc.equal(pc.utf8_length(col), 27), pc.ends_with(col, "Z")),
        pc.and_(
            pc.equal(pc.utf8_slice_codeunits(col, 10, 11), "T"), pc.equal(pc.utf8_slice_codeunits(col, 19, 20), ".")
        ),
    )
    if pc.all(ok).as_py():
        return
    bad = pc.index(ok, False).as_py()
    raise OracleError(
        "TS_NOT_CANONICAL",
        f"{source} row {first_row + bad} (counting from 0): {ts_column} {col[bad].as_py()!r} is not in the canonical"
        f" form {_CANONICAL_TS} (UTC, exactly 6 fractional digits); rewrite the output with that form",
    )


def _ts_micros(
    col: pa.ChunkedArray | pa.Array, source: str, ts_column: str, first_row: int = 0
) -> pa.Array | pa.ChunkedArray:
    """ts as int64 microseconds since the epoch, UTC; nulls, unparseable and non-canonical strings are errors."""
    if col.null_count:
        raise OracleError("TS_NULL", f"{source}: {col.null_count} rows have a null {ts_column}")
    if not pa.types.is_timestamp(col.type):
        _require_canonical(col, source, ts_column, first_row)
    try:
        if pa.types.is_timestamp(col.type):
            ts = pc.cast(col, pa.timestamp("us", tz=col.type.tz or "UTC"))
        else:
            # Arrow's ISO-8601 parser: the same instants CAST(x AS TIMESTAMP) gives for RFC 3339 UTC.
            ts = pc.cast(col, pa.timestamp("us", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise OracleError(
            "TS_UNPARSEABLE", f"{source} rows {first_row}+: {ts_column} is not an RFC 3339 timestamp: {exc}"
        ) from exc
    return pc.cast(ts, pa.int64())


def _iter_source_frames(
    sources: Sequence[SourceFile], plan: _Plan, ts_column: str, *, columns: list[str] | None = None
) -> Iterator[pl.DataFrame]:
    """Source rows in batches as polars frames with the two key columns appended."""
    for s, offset in zip(sources, plan.offsets, strict=True):
        pf = pq.ParquetFile(s.path, read_dictionary=list(plan.dictionary_columns))
        row = 0
        # Whole row groups: pyarrow decodes a row group's columns in parallel (2.4x faster than
        # iter_batches here); memory per step is one row group, which writers keep bounded.
        for rg in range(pf.metadata.num_row_groups):
            batch = pf.read_row_group(rg, columns=columns, use_threads=True)
            if batch.num_rows == 0:
                continue
            ts = _ts_micros(batch.column(ts_column), s.name, ts_column, row)
            df = pl.from_arrow(batch)
            assert isinstance(df, pl.DataFrame)
            df = df.with_columns(
                pl.Series(TS_KEY, ts, dtype=pl.Int64),
                pl.int_range(offset + row, offset + row + batch.num_rows, dtype=pl.Int64, eager=True).alias(POS_KEY),
            )
            row += batch.num_rows
            yield df


_END = object()
_PREFETCH_DEPTH = 2


def _prefetch(it: Iterator[pl.DataFrame], depth: int = _PREFETCH_DEPTH) -> Iterator[pl.DataFrame]:
    """Run `it` on a background thread, `depth` items ahead: decoding the next row group overlaps the
    caller's work on this one. Bounded, so memory grows by at most `depth` row groups.

    Every hand-over, including the end marker and an exception, gives up once the consumer has
    stopped: a consumer that fails while the queue is full (a spill write on a full disk) must not
    leave the reader blocked forever, or the generator's `finally` would wait on it for ever."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in it:
                if not hand_over(item):
                    return
            hand_over(_END)
        except BaseException as exc:  # handed to the consumer, re-raised there
            hand_over(exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # release the source files now, on this thread, not whenever GC gets to them

    worker = threading.Thread(target=produce, name="source-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, pl.DataFrame)
            yield item
    finally:
        stop.set()
        worker.join()


def _key128(df: pl.DataFrame) -> pl.Series:
    shift = pl.Series([2**_POS_BITS], dtype=pl.Int128)
    return df[TS_KEY].cast(pl.Int128) * shift + df[POS_KEY].cast(pl.Int128)


def _data(df: pl.DataFrame) -> pl.DataFrame:
    return df.drop(TS_KEY, POS_KEY)


# --------------------------------------------------------------------------------------------------
# Writing parts
# --------------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


class _Emitter:
    """Cuts a sorted stream of frames into parts of exactly rows_per_part rows and writes them."""

    def __init__(self, cfg: SortConfig, out_dir: Path, stats: SortStats, on_part: Callable[[PartWritten], None]):
        self.cfg = cfg
        self.out_dir = out_dir
        self.stats = stats
        self.on_part = on_part
        self.carry: pl.DataFrame | None = None
        self.last_key: tuple[int, int] | None = None
        self.index = 0
        self.pool = ThreadPoolExecutor(max_workers=max(1, cfg.writer_threads), thread_name_prefix="part-writer")
        self.pending: list[Future[tuple[PartWritten, RowChecksum]]] = []

    def push(self, unit: pl.DataFrame) -> None:
        if unit.height == 0:
            return
        first = (int(unit[TS_KEY][0]), int(unit[POS_KEY][0]))
        if self.last_key is not None and first <= self.last_key:
            # Ranges are disjoint and visited in order; this would be a bug, and it must not ship.
            raise OracleError(
                "SORT_ORDER_VIOLATION", f"unit starts at {first}, before the previous end {self.last_key}"
            )
        self.last_key = (int(unit[TS_KEY][-1]), int(unit[POS_KEY][-1]))
        frame = unit if self.carry is None else pl.concat([self.carry, unit], how="vertical")
        self.carry = None
        n = self.cfg.rows_per_part
        start = 0
        while frame.height - start >= n:
            self._write(frame.slice(start, n))
            start += n
        if start < frame.height:
            self.carry = frame.slice(start)

    def _write(self, frame: pl.DataFrame) -> None:
        index = self.index
        self.index += 1
        path = self.out_dir / f"part-{index:06d}.parquet"
        cfg = self.cfg

        def write() -> tuple[PartWritten, RowChecksum]:
            # Checksum and Arrow export run here, in the writer threads, so they overlap the next
            # part's encoding instead of serialising on the sort thread (measured: -1.5 s per 10 M rows).
            data = _data(frame)
            checksum = RowChecksum()
            checksum.add(data)
            ts = data[cfg.ts_column]
            # Row group by row group: only one row group's Arrow copy exists at a time per writer, so
            # writer memory is bounded by row_group_rows, not by rows_per_part.
            step = max(1, cfg.row_group_rows)
            first = data.slice(0, step).to_arrow()
            with pq.ParquetWriter(
                path, first.schema, compression=cfg.compression, store_schema=False, write_statistics=True
            ) as writer:
                writer.write_table(first, row_group_size=step)
                del first
                for offset in range(step, data.height, step):
                    writer.write_table(data.slice(offset, step).to_arrow(), row_group_size=step)
            part = PartWritten(
                index=index,
                path=str(path),
                rows=data.height,
                bytes=path.stat().st_size,
                sha256=_sha256_file(path),
                first_ts=str(ts[0]),
                last_ts=str(ts[-1]),
            )
            return part, checksum

        # At most `writer_threads` parts in flight: their frames are slices of the unit in memory.
        while len(self.pending) >= max(1, cfg.writer_threads):
            self._complete(self.pending.pop(0))
        self.pending.append(self.pool.submit(write))

    def _complete(self, fut: Future[tuple[PartWritten, RowChecksum]]) -> None:
        part, checksum = fut.result()
        self.stats.checksum_out.merge(checksum)
        self.stats.parts += 1
        self.stats.rows_out += part.rows
        if part.index == 0:
            self.stats.min_ts = part.first_ts
        self.stats.max_ts = part.last_ts
        self.on_part(part)

    def drain(self) -> None:
        while self.pending:
            self._complete(self.pending.pop(0))

    def finish(self) -> None:
        if self.carry is not None and self.carry.height:
            self._write(self.carry)
        self.carry = None
        self.drain()
        self.pool.shutdown(wait=True)

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------------
# The sort
# --------------------------------------------------------------------------------------------------


class _SpillBuckets:
    """Per-range spill files; rows are buffered per range and flushed when the buffers get big."""

    def __init__(self, root: Path, n: int, flush_bytes: int, compression: str) -> None:
        self.root = root
        self.n = n
        self.flush_bytes = flush_bytes
        self.compression = compression
        self.buffers: list[list[pl.DataFrame]] = [[] for _ in range(n)]
        self.buffered = [0] * n
        self.rows = [0] * n
        self.files: list[list[Path]] = [[] for _ in range(n)]
        self.total_buffered = 0
        self.spill_bytes = 0

    def add(self, bucket: int, df: pl.DataFrame) -> None:
        size = int(df.estimated_size())
        self.buffers[bucket].append(df)
        self.buffered[bucket] += size
        self.rows[bucket] += df.height
        self.total_buffered += size
        while self.total_buffered > self.flush_bytes:
            self._flush(max(range(self.n), key=lambda i: self.buffered[i]))

    def _flush(self, bucket: int) -> None:
        if not self.buffers[bucket]:
            return
        df = pl.concat(self.buffers[bucket], how="vertical")
        path = self.root / f"range-{bucket:05d}" / f"chunk-{len(self.files[bucket]):06d}.arrow"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            df.write_ipc(path, compression=self.compression)  # type: ignore[call-overload]
        except OSError as exc:
            raise OracleError(
                "SPILL_WRITE_FAILED",
                f"could not write the spill file {path} ({exc.strerror or exc}): free space under the work"
                " directory (--work-dir / STREAM_SORT_TEMP_DIR) or give the sort more --memory-mb",
            ) from exc
        self.spill_bytes += path.stat().st_size
        self.files[bucket].append(path)
        self.total_buffered -= self.buffered[bucket]
        self.buffers[bucket] = []
        self.buffered[bucket] = 0

    def flush_all(self) -> None:
        for b in range(self.n):
            self._flush(b)


def _boundaries(sample: pl.Series, n_ranges: int) -> pl.Series:
    s = sample.sort()
    cuts = [s[(i * len(s)) // n_ranges] for i in range(1, n_ranges)]
    return pl.Series("b", cuts, dtype=pl.Int128).unique(maintain_order=True).sort()


def _partition(
    frames: Callable[[], Iterator[pl.DataFrame]],
    keys: Callable[[], Iterator[pl.DataFrame]],
    total_rows: int,
    n_ranges: int,
    spill_dir: Path,
    cfg: SortConfig,
    unit_budget: int,
    on_frame: Callable[[pl.DataFrame], None],
    progress: Progress,
) -> _SpillBuckets:
    """Pass 1 (sample keys) + pass 2 (route every row to its range's spill files)."""
    every = max(1, total_rows // _SAMPLE_TARGET)
    samples: list[pl.Series] = []
    seen = 0
    for kdf in keys():
        k = _key128(kdf)
        # Every k-th row of *this* pass, counted from its start: the rows of a spilled range keep their
        # global positions, which may all share one remainder (and then a global-position stride
        # samples none of them, or only the ones that do not matter).
        samples.append(k.gather_every(every, offset=(-seen) % every) if every > 1 else k)
        seen += kdf.height
        progress("sample", seen, total_rows)
    sample = pl.concat(samples) if samples else pl.Series("k", [], dtype=pl.Int128)
    if len(sample) == 0:
        sample = pl.Series("k", [0], dtype=pl.Int128)
    bounds = _boundaries(sample, n_ranges)
    n = len(bounds) + 1
    buckets = _SpillBuckets(spill_dir, n, max(16 * 1024**2, unit_budget // 2), cfg.spill_compression)
    done = 0
    for df in frames():
        on_frame(df)
        b = bounds.search_sorted(_key128(df), side="right")
        if n == 1:
            buckets.add(0, df)
        else:
            parts = df.with_columns(b.alias(_BUCKET)).partition_by(_BUCKET, as_dict=True, include_key=False)
            for (idx,), part in parts.items():
                buckets.add(int(idx), part)  # type: ignore[call-overload]
        done += df.height
        progress("partition", done, total_rows)
    buckets.flush_all()
    return buckets


def _ipc_frames(files: Sequence[Path], columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    for f in files:
        yield pl.read_ipc(f, columns=columns)


def _sort_range(
    files: Sequence[Path],
    rows: int,
    unit_rows: int,
    unit_budget: int,
    spill_dir: Path,
    cfg: SortConfig,
    emitter: _Emitter,
    stats: SortStats,
    progress: Progress,
    depth: int,
) -> None:
    if rows == 0:
        return
    if rows > unit_rows * 1.5 and depth < 4:
        # Skew: this range alone exceeds the budget. Split it again, the same way, from its spill.
        sub = _partition(
            lambda: _ipc_frames(files),
            lambda: _ipc_frames(files, [TS_KEY, POS_KEY]),
            rows,
            math.ceil(rows / (unit_rows * 0.8)),
            spill_dir / f"split-{depth}",
            cfg,
            unit_budget,
            lambda _df: None,
            _noop,
        )
        for f in files:
            f.unlink()
        for b in range(sub.n):
            _sort_range(
                sub.files[b],
                sub.rows[b],
                unit_rows,
                unit_budget,
                spill_dir / f"split-{depth}-{b}",
                cfg,
                emitter,
                stats,
                progress,
                depth + 1,
            )
        stats.spill_bytes += sub.spill_bytes
        return
    _emit_unit(pl.concat(list(_ipc_frames(files)), how="vertical", rechunk=True), emitter, stats)
    for f in files:
        f.unlink()


def _unit_budget(cfg: SortConfig, plan: _Plan) -> int:
    """The part of the budget one in-memory sort unit may use: what is left after the fixed costs of
    reading (row groups decoded ahead) and writing (one row group's Arrow copy plus encoder buffers
    per writer thread), which do not shrink with the budget. Never below a quarter of the budget."""
    read = (_PREFETCH_DEPTH + 2) * plan.max_row_group_rows * plan.bytes_per_row
    write = max(1, cfg.writer_threads) * cfg.row_group_rows * plan.bytes_per_row * 3
    return int(max(cfg.memory_budget_bytes / 4, cfg.memory_budget_bytes - read - write))


def _concat_and_clear(frames: list[pl.DataFrame]) -> pl.DataFrame:
    # The caller keeps no name for the result, so the unsorted copy dies as soon as it is sorted.
    whole = pl.concat(frames, how="vertical", rechunk=True)
    frames.clear()
    return whole


def _emit_unit(df: pl.DataFrame, emitter: _Emitter, stats: SortStats) -> None:
    unit = df.sort([TS_KEY, POS_KEY])
    del df
    stats.units += 1
    stats.max_unit_rows = max(stats.max_unit_rows, unit.height)
    emitter.push(unit)
    # Finish this unit's part writes before the next unit is loaded: the budget covers one unit.
    emitter.drain()


def sort_sources(
    sources: Sequence[SourceFile],
    out_dir: Path,
    cfg: SortConfig,
    on_part: Callable[[PartWritten], None],
    progress: Progress = _noop,
) -> SortStats:
    """Sort `sources` (in the order given = filename order) into `out_dir/part-NNNNNN.parquet`.

    `on_part` is called (from this thread) for each finished part, in part order; it may move or
    upload the file. Raises OracleError on bad input or a failed integrity check.
    """
    plan = _plan(sources, cfg.ts_column)
    total = sum(plan.rows)
    stats = SortStats()
    if total == 0:
        raise OracleError("STREAM_SORT_OUTPUT_EMPTY", f"the {len(sources)} source files hold no rows")
    out_dir.mkdir(parents=True, exist_ok=True)
    unit_budget = _unit_budget(cfg, plan)
    unit_rows = max(1_000, int(unit_budget / (plan.bytes_per_row * _WORKING_SET_FACTOR)))
    emitter = _Emitter(cfg, out_dir, stats, on_part)
    spill_dir = Path(cfg.work_dir) / "spill"
    try:
        if total <= unit_rows and not cfg.force_external:
            frames = []
            done = 0
            for df in _prefetch(_iter_source_frames(sources, plan, cfg.ts_column)):
                stats.checksum_in.add(_data(df))
                frames.append(df)
                done += df.height
                progress("read", done, total)
            _emit_unit(_concat_and_clear(frames), emitter, stats)
            progress("sort", total, total)
        else:
            stats.strategy = "external"
            n_ranges = max(2, math.ceil(total / (unit_rows * 0.8)))
            buckets = _partition(
                lambda: _prefetch(_iter_source_frames(sources, plan, cfg.ts_column)),
                lambda: _prefetch(_iter_source_frames(sources, plan, cfg.ts_column, columns=[cfg.ts_column])),
                total,
                n_ranges,
                spill_dir,
                cfg,
                unit_budget,
                lambda df: stats.checksum_in.add(_data(df)),
                progress,
            )
            stats.spill_bytes += buckets.spill_bytes
            done = 0
            for b in range(buckets.n):
                _sort_range(
                    buckets.files[b],
                    buckets.rows[b],
                    unit_rows,
                    unit_budget,
                    spill_dir / f"r{b}",
                    cfg,
                    emitter,
                    stats,
                    progress,
                    0,
                )
                done += buckets.rows[b]
                progress("sort", done, total)
        emitter.finish()
    except BaseException:
        emitter.abort()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(spill_dir)
    stats.rows_in = stats.checksum_in.rows
    if stats.rows_in != total:
        raise OracleError("STREAM_SORT_VALIDATION_FAILED", f"read {stats.rows_in} rows, footers say {total}")
    if (stats.checksum_in.rows, stats.checksum_in.hash_sum, stats.checksum_in.hash_mix) != (
        stats.checksum_out.rows,
        stats.checksum_out.hash_sum,
        stats.checksum_out.hash_mix,
    ) or stats.rows_out != total:
        raise OracleError(
            "STREAM_SORT_VALIDATION_FAILED",
            f"rows/checksum differ between input {stats.checksum_in.as_dict()} and output "
            f"{stats.checksum_out.as_dict()} (rows written {stats.rows_out})",
        )
    return stats
