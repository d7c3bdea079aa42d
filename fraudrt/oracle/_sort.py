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
- If the working set of the whole input fits the memory budget: one in-memory sort *unit*.
- Otherwise a one-level *distribution* sort: pass 1 reads only the ts column and keeps every k-th
  key; quantiles of that sample cut the key space into ranges that each fit the budget; pass 2
  reads everything once and appends each row to its range's spill file (Arrow IPC on local disk);
  pass 3 sorts each range in memory and emits it. Ranges are disjoint and in key order, so the
  concatenation is sorted with no merge step, and each row is read from the source once and from
  spill once. A range that still came out bigger than a unit (skew) is split again the same way.
- A unit is sorted by computing its sort index and gathering one row group at a time from it: the
  sorted copy never exists whole, so a unit costs about its own size, not twice it.

Parts are cut at exactly ``rows_per_part`` rows (the last one shorter), with row groups of exactly
``row_group_rows`` rows inside a part (each part's last one shorter), written with zstd, statistics
on and no stored Arrow schema, so readers see the source's parquet types (a Categorical is written as
a dictionary-encoded plain string column). A part is written row group by row group as the sorted
rows arrive, so it may span units and costs nothing to hold open.

Memory: ``memory_budget_bytes`` is for the whole process. The sort measures what the process
already holds when it starts (interpreter, libraries, thread pools: its *floor*), keeps a slack for
the allocators, and divides the rest between read-ahead, spill buffers (pass 2), the unit being
sorted (pass 3) and the part writers; the numbers are in ``_Budget``. The partition pass also
flushes its spill buffers whenever the process's resident size nears the budget, whatever the model
says. A budget below the floor cannot hold: the sort then runs with its smallest buffers and says so.

Integrity: an order-independent checksum over rows (``hash_rows`` summed mod 2^64, plus a non-linear
second sum) is taken over the rows as read from the sources and over the rows handed to the part
writers; they must be equal, as must the row counts. The checksum uses polars' row hash, which is
stable within one polars version only, so the receipt names the version; portable proof for
readers is the per-part sha256 in the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import queue
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._errors import OracleError

log = logging.getLogger("fraudrt.oracle.sort")

TS_KEY = "__fr_ts"
POS_KEY = "__fr_pos"
_BUCKET = "__fr_bucket"
_POS_BITS = 40  # pos < 2^40 rows; ts_us * 2^40 + pos fits an Int128 with room to spare
_HASH_SEED = 0x5EED_0F_0AC1E
_SAMPLE_TARGET = 400_000
_DICT_MAX_RATIO = 0.05
_DICT_MAX_UNIQUE = 100_000

# The environment a sort process should start with (read by the allocators at start-up). Polars'
# jemalloc keeps freed pages for 10 s by default and pyarrow's mimalloc delays purging too, so memory
# one phase released still counted against the budget in the next: ~120 MiB at a 512 MB budget.
# A background thread returning pages after 100 ms keeps RSS near what is live for ~5% CPU; purging
# at once (decay 0) cost ~30% (docs/perf/oracle.md).
SORT_PROCESS_ENV = {
    "_RJEM_MALLOC_CONF": "background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0",
    "MIMALLOC_PURGE_DELAY": "0",
}


class SortConfig(msgspec.Struct, frozen=True, kw_only=True):
    work_dir: str
    memory_budget_bytes: int = 2 * 1024**3  # for the whole process, see the module docstring
    reserved_bytes: int = 0  # what the caller uses beside the sort (the job's uploads), inside the budget
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
    unit_rows: int = 0  # the most rows one unit may hold under the budget
    max_unit_rows: int = 0
    spill_bytes: int = 0
    floor_bytes: int = 0  # the process's resident size when the sort started
    below_floor: bool = False  # the budget was too small to hold the process; smallest buffers used
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
_TS_WIDTH = len(_CANONICAL_TS)
# Fixed characters of the canonical form, by position; the digits between them are Arrow's cast's job.
_TS_FIXED = tuple((i, ord(c)) for i, c in enumerate(_CANONICAL_TS) if c in "-T:.Z")


def _canonical_rows(arr: pa.Array) -> np.ndarray:
    """A boolean per row: is the string in the canonical shape? Read straight from the Arrow buffers
    (offsets and bytes) with numpy: ~20x cheaper than string kernels, which copy substrings."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.large_string())  # string views and the like: one copy, then the same check
    width = np.int32 if pa.types.is_string(arr.type) else np.int64
    _validity, offsets_buf, data_buf = arr.buffers()[:3]
    offsets = np.frombuffer(offsets_buf, dtype=width, count=len(arr) + 1, offset=arr.offset * width().itemsize)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, dtype=np.uint8)
    ok: np.ndarray = np.diff(offsets) == _TS_WIDTH
    if arr.null_count:
        ok &= np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if ok.all():
        # Every value has the width: the bytes are one (rows x width) block.
        start = int(offsets[0])
        chars = data[start : start + _TS_WIDTH * len(arr)].reshape(len(arr), _TS_WIDTH)
        for pos, byte in _TS_FIXED:
            ok &= chars[:, pos] == byte
    else:
        starts = offsets[:-1][ok].astype(np.int64)
        good = np.ones(len(starts), dtype=bool)
        for pos, byte in _TS_FIXED:
            good &= data[starts + pos] == byte
        ok[ok] = good
    return ok


def _require_canonical(col: pa.ChunkedArray | pa.Array, source: str, ts_column: str, first_row: int) -> None:
    """Every ts string in the one canonical form (RFC 3339, UTC, `Z`, exactly 6 fractional digits).

    WSP merges the outputs' views by comparing these strings, and the sort orders by the instant; the
    two orders agree only when every value has the same form. A `+01:00` offset, 1-5 fractional digits
    or a missing `Z` parse to the right instant but sort wrongly as text, so they are refused here,
    with the row to fix. The shape is checked here (width, `-`, `T`, `:`, `.`, `Z` in their places);
    Arrow's ISO-8601 cast that follows checks the digits."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    seen = 0
    for chunk in chunks:
        ok = _canonical_rows(chunk)
        if not ok.all():
            bad = int(np.argmin(ok))
            raise OracleError(
                "TS_NOT_CANONICAL",
                f"{source} row {first_row + seen + bad} (counting from 0): {ts_column} {chunk[bad].as_py()!r} is not"
                f" in the canonical form {_CANONICAL_TS} (UTC, exactly 6 fractional digits); rewrite the output"
                " with that form",
            )
        seen += len(chunk)


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
    sources: Sequence[SourceFile],
    plan: _Plan,
    ts_column: str,
    *,
    columns: list[str] | None = None,
    batch_rows: int | None = None,
) -> Iterator[pl.DataFrame]:
    """Source rows in batches as polars frames with the two key columns appended: whole row groups,
    or pieces of `batch_rows` rows of those that are larger (so a file written with huge row groups
    cannot blow the read-ahead's share of the budget)."""
    for s, offset in zip(sources, plan.offsets, strict=True):
        pf = pq.ParquetFile(s.path, read_dictionary=list(plan.dictionary_columns))
        row = 0
        for rg in range(pf.metadata.num_row_groups):
            batches: Iterator[pa.Table | pa.RecordBatch]
            if batch_rows is None or pf.metadata.row_group(rg).num_rows <= batch_rows:
                # Whole row groups: pyarrow decodes a row group's columns in parallel (2.4x faster than
                # iter_batches here).
                batches = iter([pf.read_row_group(rg, columns=columns, use_threads=True)])
            else:
                batches = pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=columns, use_threads=True)
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                ts = _ts_micros(batch.column(ts_column), s.name, ts_column, row)
                df = pl.from_arrow(batch)
                assert isinstance(df, pl.DataFrame)
                df = df.with_columns(
                    pl.Series(TS_KEY, ts, dtype=pl.Int64),
                    pl.int_range(offset + row, offset + row + batch.num_rows, dtype=pl.Int64, eager=True).alias(
                        POS_KEY
                    ),
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
# The memory budget
# --------------------------------------------------------------------------------------------------

# Measured with bench/bench_oracle.py (per-phase peaks, docs/perf/oracle.md):
_LIVE_FACTOR = 1.45  # resident bytes of frames as read / polars' estimated_size of them
_UNIT_FACTOR = 1.3  # a unit being sorted: its rows rechunked (+ one column's copy), the index, key sorting
_SLACK = 0.08  # of the budget: allocator fragmentation and whatever the model does not see
_MIN_SLACK = 48 * 1024**2
_PHASE_DRIFT = 48 * 1024**2  # memory an earlier phase freed that is still resident when a unit is sorted
_MIN_AVAIL = 32 * 1024**2  # at most what the sort's buffers get when the budget is below the floor
_MIN_UNIT_ROWS = 1_000
_MIN_BATCH_ROWS = 4_096


def resident_bytes() -> int:
    """This process's resident set size now."""
    return int(psutil.Process().memory_info().rss)


@dataclass(frozen=True)
class _Budget:
    total: int
    floor: int  # resident size when the sort started: interpreter, libraries, thread pools
    avail: int  # what the sort's own data may use: total - floor - reserved - slack
    below_floor: bool  # total cannot even hold the floor: smallest buffers, the budget will not hold
    row_bytes: float  # resident bytes per row of a frame
    batch_rows: int | None  # row groups larger than this are read in pieces of this many rows
    read_bytes: int  # read-ahead frames in flight
    lanes: int  # part writer threads
    pending: int  # row groups queued per lane
    write_bytes: int  # row groups queued at and being encoded by the writers
    unit_rows: int  # the most rows one sorted unit may hold
    spill_bytes: int  # spill buffers of the partition pass
    chunk_bytes: int  # the largest spill file (re-splitting a range reads one whole)
    rss_limit: int  # the partition pass flushes its buffers while the process is above this


def _budget(cfg: SortConfig, plan: _Plan, floor: int) -> _Budget:
    total = cfg.memory_budget_bytes
    row_bytes = plan.bytes_per_row * _LIVE_FACTOR
    # Allocators not started with SORT_PROCESS_ENV keep freed memory resident longer: more slack.
    tuned = all(os.environ.get(k) == v for k, v in SORT_PROCESS_ENV.items())
    slack = max(int(total * _SLACK), _MIN_SLACK) * (1 if tuned else 2)
    raw = total - floor - cfg.reserved_bytes - slack
    # A budget that cannot hold the process is applied to the sort's own buffers, capped small.
    avail = raw if raw >= _MIN_AVAIL else min(_MIN_AVAIL, total)
    # Read-ahead: the queued frames, the one being decoded and the one in the caller's hands.
    in_flight = _PREFETCH_DEPTH + 2
    cap = max(_MIN_BATCH_ROWS, int(avail / 3 / (in_flight * row_bytes)))
    read_bytes = int(in_flight * min(plan.max_row_group_rows, cap) * row_bytes)
    # Part writers (a quarter of what is left): each holds its queued row groups and the one it encodes.
    # With room for a whole part queued per lane, the next part's lane starts while this one's works
    # through its queue: both encode at once; with less, mostly one does.
    rg_bytes = cfg.row_group_rows * row_bytes
    allowance = avail / 4
    lanes = max(1, min(cfg.writer_threads, int(allowance // (3 * rg_bytes))))
    per_part = math.ceil(cfg.rows_per_part / max(1, cfg.row_group_rows))
    pending = max(1, min(per_part + 1, int(allowance / lanes / rg_bytes) - 1))
    write_bytes = int(lanes * (pending + 1) * rg_bytes)
    # A unit is either being gathered (read-ahead running, in-memory path) or being sorted and written,
    # on top of what the earlier phases left resident (freed, not yet returned: _PHASE_DRIFT).
    unit_bytes = avail - max(read_bytes, write_bytes) - _PHASE_DRIFT
    unit_rows = max(_MIN_UNIT_ROWS, int(unit_bytes / (row_bytes * _UNIT_FACTOR)))
    # The partition pass: read-ahead, the frame being routed and its routed copy, and the buffers
    # (measured: buffered pieces cost about twice their rows' share, small allocations fragment).
    frame_bytes = read_bytes // in_flight
    spill_bytes = max(1024**2, (avail - read_bytes - 2 * frame_bytes) // 2)
    return _Budget(
        total=total,
        floor=floor,
        avail=avail,
        below_floor=raw < _MIN_AVAIL,
        row_bytes=row_bytes,
        batch_rows=cap if plan.max_row_group_rows > cap else None,
        read_bytes=read_bytes,
        lanes=lanes,
        pending=pending,
        write_bytes=write_bytes,
        unit_rows=unit_rows,
        spill_bytes=spill_bytes,
        chunk_bytes=max(1024**2, spill_bytes // 4),
        rss_limit=total - cfg.reserved_bytes - slack // 2 - 2 * frame_bytes,
    )


# --------------------------------------------------------------------------------------------------
# Writing parts
# --------------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


class _OpenPart:
    """One part file being written, row group by row group, always on the same writer thread."""

    def __init__(self, index: int, path: Path, lane: int, cfg: SortConfig) -> None:
        self.index = index
        self.path = path
        self.lane = lane
        self.cfg = cfg
        self.rows = 0  # rows handed to the writer (the sort thread's count)
        self.writer: pq.ParquetWriter | None = None
        self.checksum = RowChecksum()
        self.first_ts = ""
        self.last_ts = ""

    def write(self, frame: pl.DataFrame) -> None:
        # Checksum and Arrow export run here, on the writer thread, overlapping the sort thread's
        # gathering of the next row group.
        self.checksum.add(frame)
        table = frame.to_arrow()
        ts = frame[self.cfg.ts_column]
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                self.path, table.schema, compression=self.cfg.compression, store_schema=False, write_statistics=True
            )
            self.first_ts = str(ts[0])
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.last_ts = str(ts[-1])

    def close(self) -> tuple[PartWritten, RowChecksum]:
        assert self.writer is not None
        self.writer.close()
        part = PartWritten(
            index=self.index,
            path=str(self.path),
            rows=self.checksum.rows,
            bytes=self.path.stat().st_size,
            sha256=_sha256_file(self.path),
            first_ts=self.first_ts,
            last_ts=self.last_ts,
        )
        return part, self.checksum

    def discard(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()


class _Emitter:
    """Cuts the sorted rows into parts of exactly rows_per_part rows and row groups of exactly
    row_group_rows rows (a part's last row group, and the last part, shorter).

    Rows arrive as sorted frames (copies gathered from a unit, about a row group each). Each part is
    written by one writer lane as its row groups arrive; part i goes to lane i mod lanes, so the next
    part's first row groups encode while the previous part's last ones still do. Each lane holds at
    most `pending` queued row groups, the only rows the emitter keeps besides a carry of less than a
    row group: nothing pins a unit once it has been gathered."""

    def __init__(
        self,
        cfg: SortConfig,
        out_dir: Path,
        stats: SortStats,
        on_part: Callable[[PartWritten], None],
        lanes: int,
        pending: int,
    ) -> None:
        self.pending = pending
        self.cfg = cfg
        self.out_dir = out_dir
        self.stats = stats
        self.on_part = on_part
        self.lanes = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"part-writer-{i}") for i in range(lanes)]
        self.queued: list[deque[Future[None]]] = [deque() for _ in range(lanes)]
        self.closing: deque[Future[tuple[PartWritten, RowChecksum]]] = deque()
        self.part: _OpenPart | None = None
        self.carry: pl.DataFrame | None = None
        self.index = 0
        self.last_key: tuple[int, int] | None = None

    def _need(self) -> int:
        written = self.part.rows if self.part is not None else 0
        return min(self.cfg.row_group_rows, self.cfg.rows_per_part - written)

    def want(self) -> int:
        """Rows that complete the next row group: gathering exactly this many avoids copying them again."""
        return self._need() - (self.carry.height if self.carry is not None else 0)

    def push(self, frame: pl.DataFrame) -> None:
        if self.carry is not None:
            # Once per unit boundary at most, and less than a row group.
            frame = pl.concat([self.carry, frame], how="vertical", rechunk=True)
            self.carry = None
        start = 0
        while frame.height - start >= (need := self._need()):
            self._row_group(frame.slice(start, need))
            start += need
        if start < frame.height:
            self.carry = frame.slice(start)  # fewer rows than one row group
        self._collect(block=False)

    def _row_group(self, frame: pl.DataFrame) -> None:
        if self.part is None:
            index = self.index
            self.index += 1
            self.part = _OpenPart(index, self.out_dir / f"part-{index:06d}.parquet", index % len(self.lanes), self.cfg)
        part = self.part
        waiting = self.queued[part.lane]
        while len(waiting) >= self.pending:
            waiting.popleft().result()
        waiting.append(self.lanes[part.lane].submit(part.write, frame))
        part.rows += frame.height
        if part.rows == self.cfg.rows_per_part:
            self._close_part()

    def _close_part(self) -> None:
        part, self.part = self.part, None
        assert part is not None
        self.closing.append(self.lanes[part.lane].submit(part.close))

    def _collect(self, *, block: bool) -> None:
        # Parts are reported in part order, from the sort thread (on_part may block it: backpressure).
        while self.closing and (block or self.closing[0].done()):
            part, checksum = self.closing.popleft().result()
            self.stats.checksum_out.merge(checksum)
            self.stats.parts += 1
            self.stats.rows_out += part.rows
            if part.index == 0:
                self.stats.min_ts = part.first_ts
            self.stats.max_ts = part.last_ts
            self.on_part(part)

    def finish(self) -> None:
        if self.carry is not None and self.carry.height:
            self._row_group(self.carry)
        self.carry = None
        if self.part is not None:
            self._close_part()
        for waiting in self.queued:
            while waiting:
                waiting.popleft().result()
        self._collect(block=True)
        for lane in self.lanes:
            lane.shutdown(wait=True)

    def abort(self) -> None:
        for lane in self.lanes:
            lane.shutdown(wait=True, cancel_futures=True)
        if self.part is not None:
            self.part.discard()


# --------------------------------------------------------------------------------------------------
# The sort
# --------------------------------------------------------------------------------------------------


class _SpillBuckets:
    """Per-range spill files. Rows are buffered per range and written out (one Arrow IPC file per
    flush) when a range's buffer reaches `chunk_bytes` or all buffers together reach `buffer_bytes`;
    sizes are counted in resident bytes (rows x row_bytes)."""

    def __init__(
        self, root: Path, n: int, buffer_bytes: int, chunk_bytes: int, row_bytes: float, compression: str
    ) -> None:
        self.root = root
        self.n = n
        self.buffer_bytes = buffer_bytes
        self.chunk_bytes = min(chunk_bytes, buffer_bytes)
        self.row_bytes = row_bytes
        self.compression = compression
        self.buffers: list[list[pl.DataFrame]] = [[] for _ in range(n)]
        self.buffered = [0.0] * n
        self.rows = [0] * n
        self.files: list[list[Path]] = [[] for _ in range(n)]
        self.total_buffered = 0.0
        self.spill_bytes = 0

    def add(self, bucket: int, df: pl.DataFrame) -> None:
        size = df.height * self.row_bytes
        self.buffers[bucket].append(df)
        self.buffered[bucket] += size
        self.rows[bucket] += df.height
        self.total_buffered += size
        if self.buffered[bucket] >= self.chunk_bytes:
            self._flush(bucket)
        while self.total_buffered > self.buffer_bytes:
            self.flush_largest()

    def flush_largest(self) -> None:
        self._flush(max(range(self.n), key=lambda i: self.buffered[i]))

    def _flush(self, bucket: int) -> None:
        if not self.buffers[bucket]:
            return
        # No rechunk: the buffered pieces are written as they are, one record batch each.
        df = pl.concat(self.buffers[bucket], how="vertical", rechunk=False)
        self.buffers[bucket] = []
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
        del df
        self.spill_bytes += path.stat().st_size
        self.files[bucket].append(path)
        self.total_buffered -= self.buffered[bucket]
        self.buffered[bucket] = 0.0

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
    budget: _Budget,
    buffer_bytes: int,
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
    del samples
    if len(sample) == 0:
        sample = pl.Series("k", [0], dtype=pl.Int128)
    bounds = _boundaries(sample, n_ranges)
    del sample
    n = len(bounds) + 1
    buckets = _SpillBuckets(spill_dir, n, buffer_bytes, budget.chunk_bytes, budget.row_bytes, cfg.spill_compression)
    done = 0
    for df in frames():
        on_frame(df)
        done += df.height
        if n == 1:
            buckets.add(0, df)
        else:
            b = bounds.search_sorted(_key128(df), side="right")
            parts = df.with_columns(b.alias(_BUCKET)).partition_by(_BUCKET, as_dict=True, include_key=False)
            del df, b
            for (idx,), part in parts.items():
                buckets.add(int(idx), part)  # type: ignore[call-overload]
            del parts
        # Whatever the model says, the process must stay in its budget: the allocators' real
        # footprint is what counts.
        if buckets.total_buffered > 0 and resident_bytes() > budget.rss_limit:
            buckets.flush_largest()  # one per frame: freed pages reach the OS a little later
        progress("partition", done, total_rows)
    buckets.flush_all()
    return buckets


def _ipc_frames(files: Sequence[Path], columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    for f in files:
        yield pl.read_ipc(f, columns=columns)


def _sort_range(
    files: Sequence[Path],
    rows: int,
    budget: _Budget,
    spill_dir: Path,
    cfg: SortConfig,
    emitter: _Emitter,
    stats: SortStats,
    depth: int,
) -> None:
    if rows == 0:
        return
    if rows > budget.unit_rows and depth < 4:
        # Skew: this range alone exceeds a unit. Split it again, the same way, from its spill; one of
        # its spill files is read at a time, so the new buffers get what that leaves.
        sub = _partition(
            lambda: _ipc_frames(files),
            lambda: _ipc_frames(files, [TS_KEY, POS_KEY]),
            rows,
            math.ceil(rows / (budget.unit_rows * 0.8)),
            spill_dir / f"split-{depth}",
            cfg,
            budget,
            max(1024**2, budget.spill_bytes - budget.chunk_bytes),
            lambda _df: None,
            _noop,
        )
        for f in files:
            f.unlink()
        for b in range(sub.n):
            _sort_range(
                sub.files[b], sub.rows[b], budget, spill_dir / f"split-{depth}-{b}", cfg, emitter, stats, depth + 1
            )
        stats.spill_bytes += sub.spill_bytes
        return
    if rows > budget.unit_rows:
        log.warning("a range of %d rows is sorted whole after %d splits (a unit holds %d)", rows, depth,
                    budget.unit_rows)
    frames = []
    for f in files:
        frames.append(pl.read_ipc(f))
        f.unlink()
    _emit_unit(frames, emitter, stats)


def _emit_unit(frames: list[pl.DataFrame], emitter: _Emitter, stats: SortStats) -> None:
    """Sort the rows of `frames` (consumed: the list is emptied) and hand them to the emitter.

    The sorted copy never exists whole: the unit is made contiguous one column at a time (so it is
    copied at most a column at a time), its sort index is computed, and rows are gathered through the
    index one row group at a time, each gathered piece a fresh compact frame the writers own."""
    df = pl.concat(frames, how="vertical", rechunk=False)
    frames.clear()
    columns = df.get_columns()
    del df
    for i, col in enumerate(columns):
        columns[i] = col.rechunk()  # the old chunks of this column are released right away
    unit = pl.DataFrame(columns)
    del columns
    order = unit.select(pl.arg_sort_by(TS_KEY, POS_KEY)).to_series()
    ts, pos = unit[TS_KEY], unit[POS_KEY]
    first = (int(ts[order[0]]), int(pos[order[0]]))
    last = (int(ts[order[-1]]), int(pos[order[-1]]))
    if emitter.last_key is not None and first <= emitter.last_key:
        # Ranges are disjoint and visited in order; this would be a bug, and it must not ship.
        raise OracleError("SORT_ORDER_VIOLATION", f"unit starts at {first}, before the previous end {emitter.last_key}")
    emitter.last_key = last
    unit = _data(unit)
    del ts, pos
    stats.units += 1
    stats.max_unit_rows = max(stats.max_unit_rows, unit.height)
    offset = 0
    while offset < unit.height:
        take = min(emitter.want(), unit.height - offset)
        emitter.push(unit.select(pl.all().gather(order.slice(offset, take))))
        offset += take


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
    # After _plan: reading the sample has started pyarrow's and polars' thread pools, which the floor
    # must include.
    budget = _budget(cfg, plan, resident_bytes())
    stats.floor_bytes, stats.unit_rows, stats.below_floor = budget.floor, budget.unit_rows, budget.below_floor
    if budget.below_floor:
        log.warning(
            "memory budget %d MiB is below what the process needs before sorting (%d MiB resident, %d MiB"
            " reserved): sorting with the smallest buffers; the process will use more than the budget",
            budget.total >> 20,
            budget.floor >> 20,
            cfg.reserved_bytes >> 20,
        )
    emitter = _Emitter(cfg, out_dir, stats, on_part, budget.lanes, budget.pending)
    spill_dir = Path(cfg.work_dir) / "spill"
    try:
        if total <= budget.unit_rows and not cfg.force_external:
            frames = []
            done = 0
            for df in _prefetch(_iter_source_frames(sources, plan, cfg.ts_column, batch_rows=budget.batch_rows)):
                stats.checksum_in.add(_data(df))
                frames.append(df)
                done += df.height
                progress("read", done, total)
            _emit_unit(frames, emitter, stats)
            progress("sort", total, total)
        else:
            stats.strategy = "external"
            n_ranges = max(2, math.ceil(total / (budget.unit_rows * 0.8)))
            buckets = _partition(
                lambda: _prefetch(_iter_source_frames(sources, plan, cfg.ts_column, batch_rows=budget.batch_rows)),
                # ts alone: whole row groups are small whatever their row count.
                lambda: _prefetch(_iter_source_frames(sources, plan, cfg.ts_column, columns=[cfg.ts_column])),
                total,
                n_ranges,
                spill_dir,
                cfg,
                budget,
                budget.spill_bytes,
                lambda df: stats.checksum_in.add(_data(df)),
                progress,
            )
            stats.spill_bytes += buckets.spill_bytes
            done = 0
            for b in range(buckets.n):
                _sort_range(buckets.files[b], buckets.rows[b], budget, spill_dir / f"r{b}", cfg, emitter, stats, 0)
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
