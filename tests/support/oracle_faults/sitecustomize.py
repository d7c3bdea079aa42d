"""Fault injection for oracle job processes started by tests (never imported by fraudrt itself).

A test puts this directory on the job's PYTHONPATH and names a fault in FRAUDRT_TEST_ORACLE_FAULT;
Python imports ``sitecustomize`` at start-up, before the job runs, and this patches the sort:

- ``spill_enospc``: the partition pass's spill write fails with ENOSPC at the worst moment, when the
  read-ahead thread has produced every frame and waits to hand over its end marker on a full queue.
"""

from __future__ import annotations

import os

_FAULT = os.environ.get("FRAUDRT_TEST_ORACLE_FAULT", "")

if _FAULT == "spill_enospc":
    import errno
    import threading
    from collections.abc import Iterator
    from typing import Any

    import fraudrt.oracle._sort as _sort

    _source_read = threading.Event()
    _iter_source_frames = _sort._iter_source_frames

    def _frames(*args: Any, **kwargs: Any) -> Iterator[Any]:
        _source_read.clear()
        yield from _iter_source_frames(*args, **kwargs)
        _source_read.set()

    def _write_ipc_on_a_full_disk(self: Any, *args: Any, **kwargs: Any) -> None:
        _source_read.wait(30)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    _add = _sort._SpillBuckets.add

    def _add_and_spill(self: Any, bucket: int, df: Any) -> None:
        _add(self, bucket, df)
        self._flush(bucket)  # every frame to disk at once, so the first spill write meets the full disk

    _sort._iter_source_frames = _frames
    _sort._SpillBuckets.add = _add_and_spill
    _sort.pl.DataFrame.write_ipc = _write_ipc_on_a_full_disk
elif _FAULT:
    raise SystemExit(f"unknown FRAUDRT_TEST_ORACLE_FAULT {_FAULT!r}")
