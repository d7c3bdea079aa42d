"""Read one output's stream view from S3 with pyarrow, from a checkpoint position onwards.

The part list comes from the facts view (SR listed it once), so WSP never lists the bucket. A resume
opens only the checkpoint's part and starts at the row group holding the checkpoint's row: earlier
parts are not opened and earlier row groups are not decoded. Blocking pyarrow I/O runs in a worker
thread so the pack's event loop (IG shares it) keeps serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio.to_thread
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fraudrt.config import S3Settings
from fraudrt.contracts import format_ts_utc
from fraudrt.control_ingress.scenario_runner import PartRef

from ._progress import Position


class StreamViewChanged(Exception):
    """A part file no longer matches the facts view (size): the sealed view was modified."""


@dataclass
class SourceStats:
    parts_opened: int = 0
    row_groups_read: int = 0
    rows_decoded: int = 0


@dataclass(frozen=True, slots=True)
class ViewRow:
    ts_utc: str
    row: dict[str, Any]
    after: Position  # where to resume once this row is acknowledged


def arrow_s3(settings: S3Settings) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {"region": settings.region}
    if settings.endpoint_url:
        scheme, _, host = settings.endpoint_url.partition("://")
        kwargs.update(endpoint_override=host, scheme=scheme or "https")
    if settings.access_key_id and settings.secret_access_key:
        kwargs.update(access_key=settings.access_key_id, secret_key=settings.secret_access_key)
    kwargs["force_virtual_addressing"] = not settings.path_style
    return pafs.S3FileSystem(**kwargs)


def _ts(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return format_ts_utc(value)
    raise ValueError(f"ts_utc is neither a string nor a timestamp: {value!r}")


class StreamViewSource:
    """A `BatchSource[ViewRow]` over the parts of one stream view."""

    def __init__(self, fs: pafs.FileSystem, parts: list[PartRef], start: Position, *,
                 batch_rows: int = 1024, ts_column: str = "ts_utc", stats: SourceStats | None = None) -> None:
        self._fs = fs
        self._parts = parts
        self._part = start.part_index
        self._start_row = start.row_index
        self._batch_rows = batch_rows
        self._ts_column = ts_column
        self.stats = stats or SourceStats()
        self._iter: Iterator[pa.RecordBatch] | None = None
        self._file: Any = None
        self._num_rows = 0
        self._next_row = 0  # row index (within the part) of the next row the iterator yields
        self._closed = False

    async def next_batch(self) -> list[ViewRow]:
        return await anyio.to_thread.run_sync(self._next_sync)

    def close(self) -> None:
        self._closed = True
        self._drop_file()

    def _drop_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._iter = None

    def _open(self) -> bool:
        """Open the current part at `_start_row`; False when it has nothing left to read."""
        part = self._parts[self._part]
        if self._start_row >= part.rows:  # resumed exactly at this part's end: nothing to open
            return False
        path = part.uri.removeprefix("s3://")
        self._file = self._fs.open_input_file(path)
        self.stats.parts_opened += 1
        if part.size and self._file.size() != part.size:
            size = self._file.size()
            self._drop_file()
            raise StreamViewChanged(f"{part.uri}: {size} bytes, the facts view recorded {part.size}")
        pf = pq.ParquetFile(self._file)
        meta = pf.metadata
        self._num_rows = meta.num_rows
        if self._start_row >= self._num_rows:
            self._drop_file()
            return False
        first_row = 0
        group = 0
        while group < meta.num_row_groups:
            rows = meta.row_group(group).num_rows
            if first_row + rows > self._start_row:
                break
            first_row += rows
            group += 1
        groups = list(range(group, meta.num_row_groups))
        self.stats.row_groups_read += len(groups)
        self._iter = pf.iter_batches(batch_size=self._batch_rows, row_groups=groups)
        self._next_row = first_row
        return True

    def _advance_part(self) -> None:
        self._drop_file()
        self._part += 1
        self._start_row = 0

    def _next_sync(self) -> list[ViewRow]:
        while not self._closed:
            if self._iter is None:
                if self._part >= len(self._parts):
                    return []
                if not self._open():
                    self._advance_part()
                    continue
            assert self._iter is not None
            batch = next(self._iter, None)
            if batch is None:
                self._advance_part()
                continue
            rows = batch.to_pylist()
            self.stats.rows_decoded += len(rows)
            first = self._next_row
            self._next_row += len(rows)
            if first < self._start_row:  # the checkpoint row sits inside this row group
                rows = rows[self._start_row - first:]
                first = self._start_row
            if not rows:
                continue
            part, last = self._part, self._num_rows - 1
            out = []
            for offset, row in enumerate(rows):
                index = first + offset
                after = Position(part, index + 1) if index < last else Position(part + 1, 0)
                out.append(ViewRow(_ts(row[self._ts_column]), row, after))
            return out
        return []
