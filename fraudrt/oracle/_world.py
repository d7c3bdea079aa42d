"""What the oracle knows about a world in the store: its receipt, its outputs and their source files."""

from __future__ import annotations

import fnmatch
from typing import Literal

import msgspec

from fraudrt.engine import (
    RUN_RECEIPT_FILENAME,
    Catalogue,
    OutputSpec,
    RunReceipt,
    load_catalogue,
    render_template,
)

from ._errors import OracleError
from ._store import EngineRoot, ObjectInfo, ObjectStore

Mode = Literal["fraud", "baseline", "all"]
STREAM_VIEW_DIR = "stream_view/ts_utc"


class WorldKey(msgspec.Struct, frozen=True, kw_only=True):
    manifest_fingerprint: str
    parameter_hash: str
    scenario_id: str
    seed: int


async def read_receipt(store: ObjectStore, root: EngineRoot) -> RunReceipt:
    raw = await store.get_bytes(root.key(RUN_RECEIPT_FILENAME))
    if raw is None:
        raise OracleError("RUN_RECEIPT_MISSING", f"{root.uri_of(root.key(RUN_RECEIPT_FILENAME))} does not exist")
    try:
        return msgspec.json.decode(raw, type=RunReceipt)
    except msgspec.DecodeError as exc:
        raise OracleError("RUN_RECEIPT_INVALID", f"{RUN_RECEIPT_FILENAME}: {exc}") from exc


def world_key(receipt: RunReceipt, scenario_id: str) -> WorldKey:
    if not scenario_id:
        raise OracleError("SCENARIO_ID_MISSING", "no scenario id given (--scenario-id / ORACLE_SCENARIO_ID)")
    return WorldKey(
        manifest_fingerprint=receipt.manifest_fingerprint,
        parameter_hash=receipt.parameter_hash,
        scenario_id=scenario_id,
        seed=receipt.seed,
    )


def outputs_for_mode(mode: Mode, catalogue: Catalogue | None = None) -> tuple[str, ...]:
    """The outputs a run streams: traffic + context for the mode (catalogue `role`/`mode`), context first."""
    cat = catalogue or load_catalogue()
    chosen = [
        o for o in cat.outputs if o.role in ("traffic", "context") and (mode == "all" or o.mode in (mode, "both"))
    ]
    # Context before traffic, as WSP orders them; catalogue order within a role.
    return tuple(o.output_id for o in sorted(chosen, key=lambda o: o.role != "context"))


def source_pattern(spec: OutputSpec, receipt: RunReceipt, scenario_id: str) -> str:
    return render_template(spec.path_template, receipt.tokens(scenario_id))


async def list_sources(
    store: ObjectStore, root: EngineRoot, spec: OutputSpec, receipt: RunReceipt, scenario_id: str
) -> list[ObjectInfo]:
    """The output's parquet objects, sorted by key (= the 'filename' tie-breaker order)."""
    pattern = source_pattern(spec, receipt, scenario_id)
    # List from the longest literal directory prefix, then glob the rest (fnmatch, like the reference).
    literal = pattern.split("*", 1)[0]
    list_prefix = root.key(literal.rsplit("/", 1)[0] + "/") if "/" in literal else root.key("")
    full_pattern = root.key(pattern)
    found = [o for o in await store.list(list_prefix) if fnmatch.fnmatchcase(o.key, full_pattern)]
    return sorted(found, key=lambda o: o.key)


def stream_view_prefix(root: EngineRoot, output_id: str, stream_view_root: str | None = None) -> str:
    """Key prefix (with trailing '/') of one output's stream view."""
    if stream_view_root:
        base = stream_view_root.rstrip("/")
        if base.startswith("s3://") or base.startswith("file://"):
            if not base.startswith(root.uri):
                raise OracleError(
                    "STREAM_VIEW_ROOT_INVALID", f"stream view root {base!r} is not under the engine root {root.uri!r}"
                )
            base = base[len(root.uri) :].strip("/")
        return root.key(f"{base}/output_id={output_id}/")
    return root.key(f"{STREAM_VIEW_DIR}/output_id={output_id}/")
