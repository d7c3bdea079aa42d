"""The oracle store: sync an engine world into S3, seal it, check it, and build its stream views.

Layout written under an engine run root ``R = s3://oracle-store/<engine_run_root>``::

    R/run_receipt.json, R/data/...                     copied by `oracle sync` (x-amz-meta-sha256 on each)
    R/_oracle_pack_manifest.json                       `oracle pack`, write-once (If-None-Match: *)
    R/_SEALED.json                                     `oracle pack`, write-once, after the manifest
    R/stream_view/ts_utc/output_id=<id>/part-000000.parquet ...   `oracle stream-sort`
    R/stream_view/ts_utc/output_id=<id>/_stream_view_manifest.json
    R/stream_view/ts_utc/output_id=<id>/_stream_sort_receipt.json  (written LAST: the commit marker)

Reading a stream view (what WSP does)
-------------------------------------
1. Read ``_stream_sort_receipt.json``; no receipt means no view (a half-built one may exist: ignore
   it). Require ``status == "OK"``; recompute ``stream_view_id`` (``fraudrt.contracts.stream_view_id``
   over the engine root URI, scenario id, output id, ``sort_keys``, ``partition_granularity``) and
   compare. Read ``_stream_view_manifest.json`` and check its sha256 equals the receipt's
   ``manifest_sha256``.
2. Read ``manifest.parts`` in list order (= name order = time order). Each part is plain parquet
   with the source's columns and types, zstd, row groups of ``row_group_rows`` rows (131072 by
   default) with statistics, rows totally ordered by (ts_utc as a timestamp, source file, row in
   the source file). ``pyarrow.parquet.ParquetFile(part).iter_batches()`` reads it in order; a resume
   cursor can be (part name, row index) and seek by row group using ``row_group_rows``.
3. Optionally verify a part with its ``sha256`` (of the whole object) and ``rows``.

``_stream_view_manifest.json`` fields:
  version ("v1"), stream_view_id, engine_run_root (canonical URI), stream_view_root (URI of the view
  prefix), engine_run_id (run_receipt run_id), scenario_id, output_id, world_key {manifest_fingerprint,
  parameter_hash, scenario_id, seed}, output_ids ([output_id]), sort_keys (["ts_utc", "filename",
  "file_row_number"]), partition_granularity ("flat"), source_locator_digest, attempt_id (the build
  that wrote the parts; also in each part object's metadata), row_count, min_ts_utc, max_ts_utc,
  parts [{name, rows, bytes, sha256, first_ts_utc, last_ts_utc}], created_utc.

``_stream_sort_receipt.json`` fields:
  version, status ("OK"), stream_view_id, engine_run_root, stream_view_root, output_id, output_ids,
  sort_keys, partition_granularity, source_locator_digest (sha256 of the sorted source URIs, joined by
  newlines), sources [{uri, size, etag}] (what makes a rerun against changed content a conflict even
  at the same URIs), raw_stats and sorted_stats {row_count, hash_sum, hash_mix, min_ts_utc,
  max_ts_utc} (order-independent row checksums of input and output; equal by construction or the job
  fails), checksum_algo (names the polars version: the row hash is stable within one version only),
  parts (as in the manifest), manifest_sha256, attempt_id, strategy ("in_memory" | "external"),
  memory_budget_mb, rows_per_part, spill_bytes, elapsed_seconds, created_utc.
"""

from ._check import CheckReport, CheckRequest, Issue, check_engine_root, report_to_dict
from ._errors import OracleConflict, OracleError
from ._jobs import JobStatus, job_status, list_jobs, submit_stream_sort, wait_for_job
from ._pack import PackManifest, PackRequest, PackResult, PackSeal, pack_engine_root
from ._sort import PartWritten, SortConfig, SortStats, SourceFile, sort_sources
from ._store import EngineRoot, parse_engine_root
from ._stream_sort import (
    MANIFEST,
    RECEIPT,
    OutputResult,
    StreamSortReceipt,
    StreamSortRequest,
    StreamViewManifest,
    resolve_outputs,
    stream_sort,
)
from ._sync import SyncProgress, SyncRequest, SyncResult, sync_engine_root
from ._world import STREAM_VIEW_DIR, Mode, WorldKey, outputs_for_mode

__all__ = [
    "MANIFEST",
    "RECEIPT",
    "STREAM_VIEW_DIR",
    "CheckReport",
    "CheckRequest",
    "EngineRoot",
    "Issue",
    "JobStatus",
    "Mode",
    "OracleConflict",
    "OracleError",
    "OutputResult",
    "PackManifest",
    "PackRequest",
    "PackResult",
    "PackSeal",
    "PartWritten",
    "SortConfig",
    "SortStats",
    "SourceFile",
    "StreamSortReceipt",
    "StreamSortRequest",
    "StreamViewManifest",
    "SyncProgress",
    "SyncRequest",
    "SyncResult",
    "WorldKey",
    "check_engine_root",
    "job_status",
    "list_jobs",
    "outputs_for_mode",
    "pack_engine_root",
    "parse_engine_root",
    "report_to_dict",
    "resolve_outputs",
    "sort_sources",
    "stream_sort",
    "submit_stream_sort",
    "sync_engine_root",
    "wait_for_job",
]
