"""`oracle pack`: write `_oracle_pack_manifest.json` and then `_SEALED.json`, each write-once.

Both go up as conditional PUTs (`If-None-Match: *`). When the object already exists the packer reads
it back and compares every field except the timestamp: the same world packed again is a no-op; a
different world at the same root is `PACK_CONFLICT` / `SEAL_CONFLICT` and nothing is overwritten.
Before writing, a HEAD is done too, so a server that ignored `If-None-Match` still would not be asked
to overwrite an existing pack in the common case, and every write is read back and compared.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import canon_compact, oracle_pack_id, utc_now_ts
from fraudrt.engine import catalogue_path, file_digest, gate_map_path

from ._errors import OracleConflict, OracleError
from ._store import EngineRoot, ObjectStore, open_store, parse_engine_root
from ._world import WorldKey, read_receipt, world_key

PACK_MANIFEST = "_oracle_pack_manifest.json"
SEAL = "_SEALED.json"
SealStatus = Literal["SEALED_OK", "SEALED_FAILED"]


class PackManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`_oracle_pack_manifest.json` (the reference schema, additionalProperties=false)."""

    version: str
    oracle_pack_id: str
    world_key: WorldKey
    engine_release: str
    catalogue_digest: str
    gate_map_digest: str
    created_at_utc: str


class PackSeal(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: str
    oracle_pack_id: str
    seal_status: SealStatus
    sealed_at_utc: str


class PackRequest(msgspec.Struct, frozen=True, kw_only=True):
    engine_run_root: str
    scenario_id: str
    engine_release: str = "unknown"
    seal_status: SealStatus = "SEALED_OK"


class PackResult(msgspec.Struct, frozen=True, kw_only=True):
    engine_run_root: str
    oracle_pack_id: str
    manifest_written: bool  # False: an identical manifest was already there
    seal_written: bool
    seal_status: SealStatus


def _encode(obj: Any) -> bytes:
    # The reference serialises pack files as canon-compact JSON plus a newline.
    return canon_compact(msgspec.to_builtins(obj)) + b"\n"


def _differences(ours: dict[str, Any], theirs: dict[str, Any], ignore: str) -> list[str]:
    keys = sorted((set(ours) | set(theirs)) - {ignore})
    return [f"{k}: existing {theirs.get(k)!r} != new {ours.get(k)!r}" for k in keys if ours.get(k) != theirs.get(k)]


async def _write_once(store: ObjectStore, key: str, obj: Any, ignore: str, code: str, uri: str) -> bool:
    """Write `obj` at `key` unless it exists; an existing object must equal `obj` except field `ignore`."""
    ours = msgspec.to_builtins(obj)
    written = False
    if await store.head(key) is None:
        written = await store.put_bytes(key, _encode(obj), if_none_match=True, content_type="application/json")
    raw = await store.get_bytes(key)
    if raw is None:
        raise OracleError(f"{code}_UNREADABLE", f"{uri} vanished after a write-once put")
    try:
        theirs = json.loads(raw)
    except ValueError as exc:
        raise OracleConflict(code, f"{uri} exists and is not JSON; use a new engine run root") from exc
    diffs = _differences(ours, theirs if isinstance(theirs, dict) else {}, ignore)
    if diffs:
        raise OracleConflict(
            code,
            f"{uri} already holds a different pack ({'; '.join(diffs)}); a sealed root is immutable:"
            " pack the other world under a new engine run root",
        )
    return written


def interface_digests() -> tuple[str, str]:
    return file_digest(catalogue_path()), file_digest(gate_map_path())


def expected_pack_id(key: WorldKey, engine_release: str) -> str:
    cat, gates = interface_digests()
    return oracle_pack_id(
        manifest_fingerprint=key.manifest_fingerprint,
        parameter_hash=key.parameter_hash,
        scenario_id=key.scenario_id,
        seed=key.seed,
        engine_release=engine_release,
        catalogue_digest=cat,
        gate_map_digest=gates,
    )


async def pack_in_store(store: ObjectStore, root: EngineRoot, request: PackRequest) -> PackResult:
    receipt = await read_receipt(store, root)
    key = world_key(receipt, request.scenario_id)
    cat, gates = interface_digests()
    pack_id = expected_pack_id(key, request.engine_release)
    manifest = PackManifest(
        version="v0",
        oracle_pack_id=pack_id,
        world_key=key,
        engine_release=request.engine_release,
        catalogue_digest=cat,
        gate_map_digest=gates,
        created_at_utc=utc_now_ts(),
    )
    # Manifest first, seal second: a seal never exists without the manifest it vouches for.
    m_key = root.key(PACK_MANIFEST)
    wrote_manifest = await _write_once(store, m_key, manifest, "created_at_utc", "PACK_CONFLICT", root.uri_of(m_key))
    seal = PackSeal(version="v0", oracle_pack_id=pack_id, seal_status=request.seal_status, sealed_at_utc=utc_now_ts())
    s_key = root.key(SEAL)
    wrote_seal = await _write_once(store, s_key, seal, "sealed_at_utc", "SEAL_CONFLICT", root.uri_of(s_key))
    return PackResult(
        engine_run_root=root.uri,
        oracle_pack_id=pack_id,
        manifest_written=wrote_manifest,
        seal_written=wrote_seal,
        seal_status=request.seal_status,
    )


async def pack_engine_root(settings: Settings, request: PackRequest) -> PackResult:
    root = parse_engine_root(request.engine_run_root, settings)
    async with open_store(root, settings) as store:
        return await pack_in_store(store, root, request)
