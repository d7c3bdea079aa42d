"""Read and verify what SR announces: the sealed oracle pack and one stream view per needed output.

Layout and reading protocol are the oracle's (`fraudrt.oracle` module docstring): the seal is always
required (critique §13.2 #14: it was advisory); a view exists only with an OK receipt whose
`stream_view_id` recomputes and whose `manifest_sha256` matches the manifest. The manifest's part
list (name, rows, bytes, sha256) becomes the facts view's locator, so WSP never lists the bucket and
SR never downloads a data byte to digest it (critique §13.1 #4).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import sha256_hex, stream_view_id
from fraudrt.engine import RUN_RECEIPT_FILENAME, RunReceipt, load_catalogue
from fraudrt.oracle import (
    MANIFEST,
    RECEIPT,
    STREAM_VIEW_DIR,
    EngineRoot,
    OracleError,
    PackManifest,
    PackSeal,
    StreamSortReceipt,
    StreamViewManifest,
    parse_engine_root,
)
from fraudrt.oracle import outputs_for_mode as oracle_outputs_for_mode

from ._errors import ScenarioRunnerError
from ._ledger import get_object_or_none
from ._messages import Mode, OutputRole, PartRef, StreamViewLocator

PACK_MANIFEST_NAME = "_oracle_pack_manifest.json"
SEAL_NAME = "_SEALED.json"
S = TypeVar("S", bound=msgspec.Struct)


def engine_root(value: str, settings: Settings) -> EngineRoot:
    """The canonical S3 engine root (the spelling every id is computed from)."""
    try:
        root = parse_engine_root(value, settings)
    except OracleError as exc:
        raise ScenarioRunnerError(exc.code, exc.message) from None
    if root.kind != "s3":
        raise ScenarioRunnerError("ENGINE_ROOT_INVALID", f"SR reads the oracle from S3, not {root.uri}")
    return root


def normalise_engine_root(value: str, settings: Settings) -> str:
    return engine_root(value, settings).uri


def outputs_for_mode(mode: Mode) -> tuple[list[str], list[str]]:
    """(context ids, traffic ids); their concatenation is the oracle's order (context first)."""
    catalogue = load_catalogue()
    ordered = oracle_outputs_for_mode(mode, catalogue)
    context = [o for o in ordered if catalogue.output(o).role == "context"]
    traffic = [o for o in ordered if catalogue.output(o).role == "traffic"]
    return context, traffic


async def _read(s3: Any, root: EngineRoot, rel: str, kind: type[S], missing_code: str) -> tuple[S, bytes]:
    key = root.key(rel)
    data = await get_object_or_none(s3, root.bucket, key)
    if data is None:
        raise ScenarioRunnerError(missing_code, f"{root.uri_of(key)} does not exist")
    try:
        return msgspec.json.decode(data, type=kind), data
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ScenarioRunnerError(missing_code.replace("MISSING", "INVALID"), f"{root.uri_of(key)}: {exc}") from None


async def read_sealed_pack(s3: Any, root: EngineRoot, scenario_id: str) -> tuple[RunReceipt, PackManifest]:
    """(run receipt, pack manifest), verified against the seal and the requested scenario."""
    receipt, _ = await _read(s3, root, RUN_RECEIPT_FILENAME, RunReceipt, "RUN_RECEIPT_MISSING")
    manifest, _ = await _read(s3, root, PACK_MANIFEST_NAME, PackManifest, "PACK_MANIFEST_MISSING")
    seal, _ = await _read(s3, root, SEAL_NAME, PackSeal, "PACK_NOT_SEALED")
    if seal.seal_status != "SEALED_OK":
        raise ScenarioRunnerError("PACK_NOT_SEALED", f"{root.uri}/{SEAL_NAME}: seal_status={seal.seal_status!r}, "
                                                     "not SEALED_OK")
    if seal.oracle_pack_id != manifest.oracle_pack_id:
        raise ScenarioRunnerError("SEAL_MISMATCH", f"seal names pack {seal.oracle_pack_id}, manifest "
                                                   f"{manifest.oracle_pack_id}")
    world = msgspec.to_builtins(manifest.world_key)
    expected = {"manifest_fingerprint": receipt.manifest_fingerprint, "parameter_hash": receipt.parameter_hash,
                "seed": receipt.seed, "scenario_id": scenario_id}
    if world != expected:
        raise ScenarioRunnerError("ORACLE_PACK_MISMATCH", f"pack world key {world} != requested {expected}")
    return receipt, manifest


async def locate_stream_view(s3: Any, root: EngineRoot, scenario_id: str, output_id: str,
                             role: OutputRole) -> StreamViewLocator:
    """Verify one output's stream view (the oracle's reading protocol, step 1) and describe it."""
    rel = f"{STREAM_VIEW_DIR}/output_id={output_id}"
    view_root = f"{root.uri}/{rel}"
    receipt, _ = await _read(s3, root, f"{rel}/{RECEIPT}", StreamSortReceipt, "STREAM_VIEW_RECEIPT_MISSING")
    manifest, manifest_bytes = await _read(s3, root, f"{rel}/{MANIFEST}", StreamViewManifest,
                                           "STREAM_VIEW_MANIFEST_MISSING")
    if receipt.status != "OK":
        raise ScenarioRunnerError("STREAM_VIEW_RECEIPT_BAD", f"{view_root}: receipt status {receipt.status!r}")
    if receipt.output_id != output_id or manifest.output_id != output_id:
        raise ScenarioRunnerError("STREAM_VIEW_OUTPUT_MISMATCH", f"{view_root}: receipt/manifest name another output")
    recomputed = stream_view_id(engine_run_root=root.uri, scenario_id=scenario_id, output_id=output_id,
                                sort_keys=receipt.sort_keys, partition_granularity=receipt.partition_granularity)
    if receipt.stream_view_id != recomputed or manifest.stream_view_id != recomputed:
        raise ScenarioRunnerError("STREAM_VIEW_ID_MISMATCH", f"{view_root}: stream_view_id is not the one of "
                                                             f"({root.uri}, {scenario_id}, {output_id})")
    if sha256_hex(manifest_bytes) != receipt.manifest_sha256:
        raise ScenarioRunnerError("STREAM_VIEW_MANIFEST_MISMATCH", f"{view_root}: manifest does not match the "
                                                                   "receipt's manifest_sha256")
    if not manifest.parts or manifest.row_count == 0:
        raise ScenarioRunnerError("STREAM_VIEW_EMPTY", f"{view_root}: no parts")
    parts = [PartRef(uri=f"{view_root}/{p.name}", size=p.bytes, digest=p.sha256, rows=p.rows,
                     first_ts_utc=p.first_ts_utc, last_ts_utc=p.last_ts_utc) for p in manifest.parts]
    return StreamViewLocator(
        output_id=output_id, role=role, stream_view_root=view_root, stream_view_id=recomputed,
        receipt_ref=f"{view_root}/{RECEIPT}", manifest_ref=f"{view_root}/{MANIFEST}",
        primary_key=list(load_catalogue().output(output_id).primary_key), row_count=manifest.row_count,
        parts=parts, content_digest=sha256_hex("\n".join(f"{p.uri}|{p.size}|{p.digest}" for p in parts)),
    )
