"""Read and verify what SR announces: the sealed oracle pack and one stream view per needed output.

Layout (DESIGN §5): `s3://oracle-store/<root>/{run_receipt.json,_oracle_pack_manifest.json,_SEALED.json}`
and `<root>/stream_view/ts_utc/output_id=<id>/{part-*.parquet,_stream_view_manifest.json,
_stream_sort_receipt.json}`. The seal is always required (critique §13.2 #14: it was advisory).
"""

from __future__ import annotations

import json
from typing import Any, Final

from fraudrt.contracts import sha256_hex, stream_view_id
from fraudrt.engine import load_catalogue

from ._errors import ScenarioRunnerError
from ._ledger import get_object_or_none
from ._messages import Mode, OutputRole, PartRef, StreamViewLocator

STREAM_VIEW_DIR: Final = "stream_view/ts_utc"
RECEIPT_NAME: Final = "_stream_sort_receipt.json"
MANIFEST_NAME: Final = "_stream_view_manifest.json"
PACK_MANIFEST_NAME: Final = "_oracle_pack_manifest.json"
SEAL_NAME: Final = "_SEALED.json"


def normalise_engine_root(engine_run_root: str, oracle_bucket: str) -> str:
    """`s3://bucket/root` stays; a bare `root` is taken to live in the oracle bucket."""
    root = engine_run_root.rstrip("/")
    if root.startswith("s3://"):
        return root
    return f"s3://{oracle_bucket}/{root.lstrip('/')}"


def split_root(root_uri: str) -> tuple[str, str]:
    bucket, _, prefix = root_uri[5:].partition("/")
    return bucket, prefix.strip("/")


def outputs_for_mode(mode: Mode) -> tuple[list[str], list[str]]:
    """(context ids, traffic ids) in catalogue order; context is streamed first at equal event time."""
    catalogue = load_catalogue()
    context = [o.output_id for o in catalogue.outputs if o.role == "context" and o.mode in ("both", mode)]
    traffic = [o.output_id for o in catalogue.outputs if o.role == "traffic" and o.mode == mode]
    return context, traffic


def primary_key(output_id: str) -> list[str]:
    return list(load_catalogue().output(output_id).primary_key)


async def read_json(s3: Any, bucket: str, key: str, missing_code: str) -> dict[str, Any]:
    data = await get_object_or_none(s3, bucket, key)
    if data is None:
        raise ScenarioRunnerError(missing_code, f"s3://{bucket}/{key} does not exist")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ScenarioRunnerError(missing_code.replace("MISSING", "INVALID"),
                                  f"s3://{bucket}/{key} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ScenarioRunnerError(missing_code.replace("MISSING", "INVALID"), f"s3://{bucket}/{key}: not an object")
    return doc


async def read_sealed_pack(s3: Any, root_uri: str, scenario_id: str) -> tuple[dict[str, Any], dict[str, Any],
                                                                           dict[str, Any]]:
    """(run receipt, pack manifest, seal), verified against each other and the requested scenario."""
    bucket, prefix = split_root(root_uri)
    receipt = await read_json(s3, bucket, f"{prefix}/run_receipt.json", "RUN_RECEIPT_MISSING")
    manifest = await read_json(s3, bucket, f"{prefix}/{PACK_MANIFEST_NAME}", "PACK_MANIFEST_MISSING")
    seal = await read_json(s3, bucket, f"{prefix}/{SEAL_NAME}", "PACK_NOT_SEALED")
    if seal.get("seal_status") != "SEALED_OK":
        raise ScenarioRunnerError("PACK_NOT_SEALED", f"{root_uri}/{SEAL_NAME}: seal_status="
                                                     f"{seal.get('seal_status')!r}, not SEALED_OK")
    if seal.get("oracle_pack_id") != manifest.get("oracle_pack_id"):
        raise ScenarioRunnerError("SEAL_MISMATCH", f"seal names pack {seal.get('oracle_pack_id')!r}, manifest "
                                                   f"{manifest.get('oracle_pack_id')!r}")
    world = manifest.get("world_key") or {}
    expected = {"manifest_fingerprint": receipt.get("manifest_fingerprint"),
                "parameter_hash": receipt.get("parameter_hash"), "seed": receipt.get("seed"),
                "scenario_id": scenario_id}
    got = {k: world.get(k) for k in expected}
    if got != expected:
        raise ScenarioRunnerError("ORACLE_PACK_MISMATCH", f"pack world key {got} != requested {expected}")
    for field in ("run_id", "manifest_fingerprint", "parameter_hash", "seed"):
        if receipt.get(field) in (None, ""):
            raise ScenarioRunnerError("WORLD_KEY_MISSING", f"run_receipt.json has no {field}")
    return receipt, manifest, seal


def _same_root(a: str, b: str) -> bool:
    # The oracle may record the root as a URI or as a key inside the bucket.
    return a.rstrip("/") == b.rstrip("/") or a.rstrip("/").endswith("/" + b.strip("/")) or \
        b.rstrip("/").endswith("/" + a.strip("/"))


async def locate_stream_view(s3: Any, root_uri: str, scenario_id: str, output_id: str,
                             role: OutputRole) -> StreamViewLocator:
    """Verify one output's stream view (receipt OK, ids consistent, parts present) and describe it."""
    bucket, prefix = split_root(root_uri)
    view_prefix = f"{prefix}/{STREAM_VIEW_DIR}/output_id={output_id}"
    view_root = f"s3://{bucket}/{view_prefix}"
    receipt = await read_json(s3, bucket, f"{view_prefix}/{RECEIPT_NAME}", "STREAM_VIEW_RECEIPT_MISSING")
    manifest = await read_json(s3, bucket, f"{view_prefix}/{MANIFEST_NAME}", "STREAM_VIEW_MANIFEST_MISSING")
    if receipt.get("status") != "OK":
        raise ScenarioRunnerError("STREAM_VIEW_RECEIPT_BAD", f"{view_root}: receipt status {receipt.get('status')!r}")
    if receipt.get("output_id") != output_id or manifest.get("output_id") != output_id:
        raise ScenarioRunnerError("STREAM_VIEW_OUTPUT_MISMATCH", f"{view_root}: receipt/manifest name another output")
    view_id = receipt.get("stream_view_id")
    if not view_id or manifest.get("stream_view_id") != view_id:
        raise ScenarioRunnerError("STREAM_VIEW_ID_MISMATCH", f"{view_root}: receipt and manifest disagree on "
                                                             "stream_view_id")
    recorded_root = str(receipt.get("engine_run_root") or root_uri)
    if not _same_root(recorded_root, root_uri):
        raise ScenarioRunnerError("STREAM_VIEW_ROOT_MISMATCH", f"{view_root}: built for {recorded_root}")
    sort_keys = receipt.get("sort_keys") or ["ts_utc", "filename", "file_row_number"]
    recomputed = stream_view_id(engine_run_root=recorded_root, scenario_id=scenario_id, output_id=output_id,
                                sort_keys=list(sort_keys),
                                partition_granularity=str(receipt.get("partition_granularity") or "flat"))
    if recomputed != view_id:
        raise ScenarioRunnerError("STREAM_VIEW_ID_MISMATCH", f"{view_root}: stream_view_id does not match its "
                                                             f"recipe for scenario {scenario_id!r}")
    parts: list[PartRef] = []
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=view_prefix + "/"):
        for obj in page.get("Contents", []):
            name = obj["Key"].rsplit("/", 1)[-1]
            if name.startswith("part-") and name.endswith(".parquet"):
                parts.append(PartRef(uri=f"s3://{bucket}/{obj['Key']}", size=int(obj["Size"]),
                                     etag=str(obj.get("ETag", "")).strip('"')))
    if not parts:
        raise ScenarioRunnerError("STREAM_VIEW_EMPTY", f"{view_root}: no part-*.parquet")
    # Zero-padded part names: lexicographic order is the view's time order.
    parts.sort(key=lambda p: p.uri)
    row_count: int | None = None
    stats = receipt.get("sorted_stats") or receipt.get("raw_stats") or {}
    if isinstance(stats, dict) and isinstance(stats.get("row_count"), int):
        row_count = stats["row_count"]
    elif isinstance(receipt.get("row_count"), int):
        row_count = receipt["row_count"]
    digest = sha256_hex("\n".join(f"{p.uri}|{p.size}|{p.etag}" for p in parts))
    return StreamViewLocator(
        output_id=output_id, role=role, stream_view_root=view_root, stream_view_id=view_id,
        receipt_ref=f"{view_root}/{RECEIPT_NAME}", manifest_ref=f"{view_root}/{MANIFEST_NAME}",
        primary_key=primary_key(output_id), row_count=row_count, parts=parts, content_digest=digest,
    )
