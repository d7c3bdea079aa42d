"""`oracle check [--strict]`: verify a world in the store and list EVERY problem, never just the first.

Checks, each adding issues rather than stopping:

- run receipt readable; scenario id given;
- pack: manifest and seal present and well-formed, seal status SEALED_OK, seal and manifest name the
  same pack id, the manifest's world key is this world's, and the pack id recomputes from the world
  key, the release and the current catalogue/gate-map digests;
- gates: for each gate the chosen outputs need (plus its dependencies, transitively) the
  `_passed.flag` exists and parses, index.json lists members (in any form real engines write, see
  `fraudrt.engine.parse_bundle_index`) that exist with the sha256 they claim, and the bundle digest
  recomputes to the flag's value;
- outputs: every required output has parquet files; every file has the catalogue's required columns
  (optional ones may be absent) with the catalogue's types (and no others where
  additionalProperties=false); path-embedded partition values (`seed=42/…`) equal the row values of
  those columns in every row of that file.

Every failure is a finding with a stable code and a sentence an operator can act on, never a bare
exception: a store that cannot be read is ``STORE_READ_FAILED`` (with the failure class from
``fraudrt.runtime.classify``), and a check that could not complete for a reason nobody foresaw is
``CHECK_INCOMPLETE`` naming what was being checked.

Severity: problems with the data are always errors. A missing seal/manifest is an error with
``--strict`` and a warning without it (so a world can be checked before it is packed). Exit status
is non-zero when any error is reported (fail closed).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import msgspec
import polars as pl

from fraudrt.config import Settings
from fraudrt.engine import (
    BundleIndexError,
    GateMap,
    OutputSpec,
    RunReceipt,
    bundle_members,
    load_catalogue,
    load_gate_map,
    parse_bundle_index,
    parse_passed_flag,
    render_template,
)
from fraudrt.runtime import classify
from fraudrt.substrate._clients import polars_storage_options

from ._errors import OracleError
from ._pack import PACK_MANIFEST, SEAL, PackManifest, PackSeal, expected_pack_id
from ._store import EngineRoot, ObjectInfo, ObjectStore, open_store, parse_engine_root
from ._world import Mode, list_sources, read_receipt, world_key

Severity = Literal["ERROR", "WARN"]

# Catalogue type names -> polars dtypes (what a reader of the parquet sees).
_TYPES: dict[str, pl.DataType] = {
    "Utf8": pl.String(),
    "String": pl.String(),
    "Int64": pl.Int64(),
    "Int32": pl.Int32(),
    "UInt64": pl.UInt64(),
    "UInt32": pl.UInt32(),
    "Float64": pl.Float64(),
    "Boolean": pl.Boolean(),
}


class Issue(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    severity: Severity
    detail: str
    path: str = ""


class CheckRequest(msgspec.Struct, frozen=True, kw_only=True):
    engine_run_root: str
    scenario_id: str
    strict: bool = False
    mode: Mode = "all"
    output_ids: tuple[str, ...] = ()


class CheckReport(msgspec.Struct, kw_only=True):
    status: Literal["OK", "WARN", "FAIL"] = "OK"
    engine_run_root: str = ""
    strict: bool = False
    oracle_pack_id: str | None = None
    outputs_checked: list[str] = msgspec.field(default_factory=list)
    gates_checked: list[str] = msgspec.field(default_factory=list)
    files_checked: int = 0
    issues: list[Issue] = msgspec.field(default_factory=list)

    def add(self, code: str, severity: Severity, detail: str, path: str = "") -> None:
        self.issues.append(Issue(code=code, severity=severity, detail=detail, path=path))

    def finish(self) -> CheckReport:
        if any(i.severity == "ERROR" for i in self.issues):
            self.status = "FAIL"
        elif self.issues:
            self.status = "WARN"
        else:
            self.status = "OK"
        return self

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "ERROR"]


def _reason(exc: BaseException) -> str:
    """A library's reason for a failure, as a parenthetical after our own sentence (first line, short)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _unreadable(report: CheckReport, what: str, path: str, exc: Exception) -> None:
    failure = classify(exc)
    hint = (
        "the store is unreachable or failing; rerun the check when it is back"
        if failure.transient
        else "the store refused the request; check the bucket, the key and the credentials"
    )
    report.add("STORE_READ_FAILED", "ERROR", f"could not read {what} ({failure.code}): {hint}", path)


@asynccontextmanager
async def _checking(report: CheckReport, what: str, path: str = "") -> AsyncIterator[None]:
    """Whatever goes wrong while checking `what` becomes a finding, and the other checks still run."""
    try:
        yield
    except Exception as exc:
        if classify(exc).transient:
            _unreadable(report, what, path, exc)
        else:
            report.add(
                "CHECK_INCOMPLETE",
                "ERROR",
                f"{what} could not be checked ({_reason(exc)}); this is a fraudrt bug: report it with the world",
                path,
            )


async def _fetch(store: ObjectStore, key: str, uri: str, what: str, report: CheckReport) -> tuple[bool, bytes | None]:
    """(readable, bytes or None if absent); an unreadable object is recorded as STORE_READ_FAILED."""
    try:
        return True, await store.get_bytes(key)
    except Exception as exc:
        _unreadable(report, what, uri, exc)
        return False, None


def _chosen_outputs(request: CheckRequest, report: CheckReport) -> list[OutputSpec]:
    cat = load_catalogue()
    if request.output_ids:
        unknown = [o for o in request.output_ids if o not in cat.output_ids]
        for o in unknown:
            report.add("OUTPUT_UNKNOWN", "ERROR", f"{o} is not an output of the engine catalogue {cat.output_ids}")
        return [cat.output(o) for o in request.output_ids if o not in unknown]
    return [
        o
        for o in cat.outputs
        if o.availability == "required" and (request.mode == "all" or o.mode in (request.mode, "both"))
    ]


async def _check_pack(
    store: ObjectStore, root: EngineRoot, receipt: RunReceipt, request: CheckRequest, report: CheckReport
) -> None:
    missing_sev: Severity = "ERROR" if request.strict else "WARN"
    manifest_uri = root.uri_of(root.key(PACK_MANIFEST))
    seal_uri = root.uri_of(root.key(SEAL))
    ok_m, raw_m = await _fetch(store, root.key(PACK_MANIFEST), manifest_uri, "the pack manifest", report)
    ok_s, raw_s = await _fetch(store, root.key(SEAL), seal_uri, "the seal", report)
    manifest: PackManifest | None = None
    seal: PackSeal | None = None
    if ok_m and raw_m is None:
        report.add("PACK_MANIFEST_MISSING", missing_sev, "no pack manifest: run `fraudrt oracle pack`", manifest_uri)
    elif raw_m is not None:
        try:
            manifest = msgspec.json.decode(raw_m, type=PackManifest)
        except msgspec.DecodeError as exc:
            report.add(
                "PACK_MANIFEST_INVALID",
                "ERROR",
                f"the pack manifest is not a v0 pack manifest ({exc}); it was not written by `oracle pack`:"
                " move it aside and pack again",
                manifest_uri,
            )
    if ok_s and raw_s is None:
        report.add("PACK_NOT_SEALED", missing_sev, "no _SEALED.json: run `fraudrt oracle pack`", seal_uri)
    elif raw_s is not None:
        try:
            seal = msgspec.json.decode(raw_s, type=PackSeal)
        except msgspec.DecodeError as exc:
            report.add(
                "SEAL_INVALID",
                "ERROR",
                f"_SEALED.json is not a v0 seal ({exc}); it was not written by `oracle pack`: move it aside and"
                " pack again",
                seal_uri,
            )
    if seal is not None and seal.seal_status != "SEALED_OK":
        report.add("SEAL_FAILED", "ERROR", f"seal_status is {seal.seal_status}", seal_uri)
    if manifest is not None:
        report.oracle_pack_id = manifest.oracle_pack_id
        if request.scenario_id:
            wk = world_key(receipt, request.scenario_id)
            if manifest.world_key != wk:
                report.add(
                    "WORLD_KEY_MISMATCH",
                    "ERROR",
                    f"pack manifest world key {msgspec.to_builtins(manifest.world_key)} != world "
                    f"{msgspec.to_builtins(wk)}",
                )
            recomputed = expected_pack_id(wk, manifest.engine_release)
            if recomputed != manifest.oracle_pack_id:
                report.add(
                    "PACK_ID_MISMATCH",
                    "ERROR",
                    f"manifest oracle_pack_id {manifest.oracle_pack_id} != recomputed {recomputed} (the"
                    " catalogue or gate map changed since the pack was sealed?)",
                )
        if seal is not None and seal.oracle_pack_id != manifest.oracle_pack_id:
            report.add(
                "SEAL_MISMATCH", "ERROR", f"seal names pack {seal.oracle_pack_id}, manifest {manifest.oracle_pack_id}"
            )


async def _check_gate(
    store: ObjectStore, root: EngineRoot, gates: GateMap, gate_id: str, mf: str, report: CheckReport
) -> None:
    gate = gates.gate(gate_id)
    tokens = {"manifest_fingerprint": mf}
    vm = gate.verification_method
    flag_key = root.key(render_template(gate.passed_flag_path_template, tokens))
    flag_uri = root.uri_of(flag_key)
    readable, raw_flag = await _fetch(store, flag_key, flag_uri, f"{gate_id} _passed.flag", report)
    if not readable:
        return
    if raw_flag is None:
        report.add("GATE_FLAG_MISSING", "ERROR", f"{gate_id}: no _passed.flag", flag_uri)
        return
    expected = parse_passed_flag(raw_flag.decode("utf-8", errors="replace"), vm.digest_field)
    if expected is None:
        report.add(
            "GATE_FLAG_UNREADABLE",
            "ERROR",
            f"{gate_id}: _passed.flag carries no {vm.digest_field} (expected `{vm.digest_field} = <sha256>` or"
            f' {{"{vm.digest_field}": "<sha256>"}})',
            flag_uri,
        )
        return
    index_key = root.key(render_template(gate.index_path_template, tokens))
    index_uri = root.uri_of(index_key)
    readable, raw_index = await _fetch(store, index_key, index_uri, f"{gate_id} index.json", report)
    if not readable:
        return
    if raw_index is None:
        report.add("GATE_INDEX_MISSING", "ERROR", f"{gate_id}: no index.json", index_uri)
        return
    try:
        members = parse_bundle_index(raw_index)
    except BundleIndexError as exc:
        for problem in exc.problems:
            report.add(f"GATE_{problem.code}", "ERROR", f"{gate_id}: {problem.detail}", index_uri)
        return
    bundle_prefix = root.key(render_template(gate.bundle_root_template, tokens))
    if not bundle_prefix.endswith("/"):
        bundle_prefix += "/"
    digest = hashlib.sha256()
    ok = True
    claimed = {m.path: m.sha256_hex for m in members}
    for rel in bundle_members(list(claimed), tuple(vm.exclude_filenames)):
        member_uri = root.uri_of(bundle_prefix + rel)
        readable, data = await _fetch(store, bundle_prefix + rel, member_uri, f"{gate_id} member {rel}", report)
        if data is None:
            if readable:
                detail = f"{gate_id}: member {rel} is listed in index.json but absent"
                report.add("GATE_MEMBER_MISSING", "ERROR", detail, member_uri)
            ok = False
            continue
        listed = claimed[rel]
        if listed is not None and hashlib.sha256(data).hexdigest() != listed:
            report.add(
                "GATE_MEMBER_DIGEST_MISMATCH",
                "ERROR",
                f"{gate_id}: {rel} does not match the sha256 index.json gives for it",
                member_uri,
            )
            ok = False
        digest.update(data)
    if ok and digest.hexdigest() != expected:
        report.add(
            "GATE_DIGEST_MISMATCH",
            "ERROR",
            f"{gate_id}: bundle digest {digest.hexdigest()} != flag {expected}",
            flag_uri,
        )


def _partition_tokens(rel_path: str, partitions: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for segment in rel_path.split("/"):
        key, sep, value = segment.partition("=")
        if sep and key in partitions:
            out[key] = value
    return out


def _check_file_sync(
    source: str, storage_options: dict[str, str] | None, spec: OutputSpec, tokens: dict[str, str], uri: str
) -> list[Issue]:
    def unreadable(exc: Exception) -> list[Issue]:
        return [
            Issue(
                code="OUTPUT_UNREADABLE",
                severity="ERROR",
                detail=f"{spec.output_id}: this file cannot be read as parquet ({_reason(exc)})",
                path=uri,
            )
        ]

    issues: list[Issue] = []
    try:
        lf = pl.scan_parquet(source, storage_options=storage_options)
        schema = lf.collect_schema()
    except Exception as exc:
        return unreadable(exc)
    expected = {c.name: c for c in spec.columns}
    for name, col in expected.items():
        if name not in schema:
            if col.required:
                nullable = " (nullable, but required: the column must be there even when every value is null)"
                issues.append(
                    Issue(
                        code="OUTPUT_COLUMN_MISSING",
                        severity="ERROR",
                        detail=f"{spec.output_id}: required column {name!r} missing{nullable if col.nullable else ''}",
                        path=uri,
                    )
                )
            continue
        want = _TYPES.get(col.type)
        if want is not None and schema[name] != want:
            issues.append(
                Issue(
                    code="OUTPUT_COLUMN_TYPE_MISMATCH",
                    severity="ERROR",
                    detail=f"{spec.output_id}: column {name!r} is {schema[name]}, catalogue says {col.type}",
                    path=uri,
                )
            )
    if not spec.additional_properties and expected:
        extra = [n for n in schema.names() if n not in expected]
        if extra:
            issues.append(
                Issue(
                    code="OUTPUT_COLUMN_UNEXPECTED",
                    severity="ERROR",
                    detail=f"{spec.output_id}: columns not in the catalogue: {extra}",
                    path=uri,
                )
            )
    for key in spec.partitions:
        if key not in tokens:
            issues.append(
                Issue(
                    code="PARTITION_PATH_MISSING",
                    severity="ERROR",
                    detail=f"{spec.output_id}: path has no {key}= segment",
                    path=uri,
                )
            )
    checkable = [k for k in spec.partitions if k in tokens and k in schema]
    if checkable:
        # Only the partition columns are read (column projection), each reduced to its distinct values.
        try:
            distinct = lf.select([pl.col(k).cast(pl.String).unique().implode() for k in checkable]).collect()
        except Exception as exc:
            return [*issues, *unreadable(exc)]
        for k in checkable:
            values = [v for v in distinct[k][0].to_list()]
            bad = [v for v in values if v != tokens[k]]
            if bad:
                issues.append(
                    Issue(
                        code="PARTITION_VALUE_MISMATCH",
                        severity="ERROR",
                        detail=f"{spec.output_id}: path {k}={tokens[k]} but rows hold {sorted(map(str, bad))[:5]}",
                        path=uri,
                    )
                )
    return issues


async def _check_output(
    store: ObjectStore,
    root: EngineRoot,
    settings: Settings,
    spec: OutputSpec,
    receipt: RunReceipt,
    scenario_id: str,
    report: CheckReport,
) -> None:
    objs: list[ObjectInfo] = await list_sources(store, root, spec, receipt, scenario_id)
    if not objs:
        sev: Severity = "ERROR" if spec.availability == "required" else "WARN"
        report.add("OUTPUT_MISSING", sev, f"{spec.output_id}: no parquet files for {spec.path_template}", root.uri)
        return
    opts = polars_storage_options(settings.s3) if root.kind == "s3" else None
    limiter = anyio.CapacityLimiter(4)

    async def one(o: ObjectInfo) -> None:
        local = store.local_path(o.key)
        source = str(local) if local is not None else root.uri_of(o.key)
        tokens = _partition_tokens(root.rel(o.key), spec.partitions)
        async with limiter:
            issues = await anyio.to_thread.run_sync(_check_file_sync, source, opts, spec, tokens, root.uri_of(o.key))
        report.issues.extend(issues)

    async with anyio.create_task_group() as tg:
        for o in objs:
            tg.start_soon(one, o)
    report.files_checked += len(objs)


async def check_in_store(
    store: ObjectStore, root: EngineRoot, settings: Settings, request: CheckRequest
) -> CheckReport:
    report = CheckReport(engine_run_root=root.uri, strict=request.strict)
    receipt: RunReceipt | None = None
    async with _checking(report, "the run receipt", root.uri):
        try:
            receipt = await read_receipt(store, root)
        except OracleError as exc:
            report.add(exc.code, "ERROR", exc.message, root.uri)
    if receipt is None:
        return report.finish()
    if not request.scenario_id:
        report.add("SCENARIO_ID_MISSING", "ERROR", "no scenario id given (--scenario-id / ORACLE_SCENARIO_ID)")
    async with _checking(report, "the pack manifest and seal", root.uri):
        await _check_pack(store, root, receipt, request, report)
    outputs = _chosen_outputs(request, report)
    gates = load_gate_map()
    try:
        gate_ids = gates.closure(sorted({g for o in outputs for g in o.read_requires_gates}))
    except (KeyError, ValueError) as exc:
        report.add(
            "GATE_MAP_INVALID",
            "ERROR",
            f"the catalogue and gate map disagree ({_reason(exc)}); fix fraudrt/engine/interface",
        )
        gate_ids = ()
    for gate_id in gate_ids:
        async with _checking(report, f"gate {gate_id}", root.uri):
            await _check_gate(store, root, gates, gate_id, receipt.manifest_fingerprint, report)
    report.gates_checked = list(gate_ids)
    if request.scenario_id:
        for spec in outputs:
            async with _checking(report, f"output {spec.output_id}", root.uri):
                await _check_output(store, root, settings, spec, receipt, request.scenario_id, report)
    report.outputs_checked = [o.output_id for o in outputs]
    report.issues.sort(key=lambda i: (i.severity != "ERROR", i.code, i.path))
    return report.finish()


async def check_engine_root(settings: Settings, request: CheckRequest) -> CheckReport:
    root = parse_engine_root(request.engine_run_root, settings)
    async with open_store(root, settings) as store:
        return await check_in_store(store, root, settings, request)


def report_to_dict(report: CheckReport) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(report)
    out["errors"] = len(report.errors)
    out["warnings"] = len(report.issues) - len(report.errors)
    return out
