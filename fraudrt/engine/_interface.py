"""The engine interface: output catalogue, gate map, run receipt and path rendering.

These are what the oracle (pack, check, stream-sort) and SR read, for our generated worlds and for any
world written in the engine's format; nothing here knows how a world was produced.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import yaml

_INTERFACE_PACKAGE = "fraudrt.engine.interface"
CATALOGUE_FILENAME = "engine_outputs.catalogue.yaml"
GATE_MAP_FILENAME = "engine_gates.map.yaml"
RUN_RECEIPT_FILENAME = "run_receipt.json"


class ColumnSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One physical column of an output.

    ``required`` and ``nullable`` are separate questions: a required column must be present in every
    file, even when its values may be null (``nullable``); an optional one (``required: false``, what the
    engine's schema calls optional) may be left out of a file altogether, but when present it must have
    the catalogue's type.
    """

    name: str
    type: str
    nullable: bool = False
    required: bool = True


class OutputSpec(msgspec.Struct, frozen=True, kw_only=True):
    output_id: str
    path_template: str
    partitions: tuple[str, ...]
    primary_key: tuple[str, ...]
    join_keys: tuple[str, ...]
    read_requires_gates: tuple[str, ...]
    scope: str
    availability: str = "required"
    output_class: str = msgspec.field(default="surface", name="class")
    role: str = "context"
    mode: str = "both"
    owner_segment: str = ""
    exposure: str = "external"
    ts_column: str = "ts_utc"
    additional_properties: bool = True
    columns: tuple[ColumnSpec, ...] = ()
    description: str = ""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def __post_init__(self) -> None:
        # A key a reader joins, partitions or orders on cannot be optional: event ids and partition
        # checks would be computed from a column that may not be there.
        if not self.columns:
            return
        keys = {*self.partitions, *self.primary_key, *self.join_keys, self.ts_column}
        loose = sorted(keys - set(self.required_columns))
        if loose:
            raise ValueError(f"{self.output_id}: key columns must be required columns of the output: {loose}")


class Catalogue(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    outputs: tuple[OutputSpec, ...]

    def output(self, output_id: str) -> OutputSpec:
        for spec in self.outputs:
            if spec.output_id == output_id:
                return spec
        raise KeyError(f"output_id not in catalogue: {output_id}")

    @property
    def output_ids(self) -> tuple[str, ...]:
        return tuple(o.output_id for o in self.outputs)


class VerificationMethod(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    digest_field: str
    ordering: str = "ascii_lex"
    exclude_filenames: tuple[str, ...] = ("_passed.flag", "index.json")
    flag_format: str = "kv_text"


class GateSpec(msgspec.Struct, frozen=True, kw_only=True):
    gate_id: str
    segment: str
    scope: str
    bundle_root_template: str
    index_path_template: str
    passed_flag_path_template: str
    verification_method: VerificationMethod
    layer: int = 0
    input_set_authority: str = "index.json"
    authorizes_outputs: tuple[str, ...] = ()
    upstream_gate_dependencies: tuple[str, ...] = ()


class GateMap(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    gates: tuple[GateSpec, ...]

    def gate(self, gate_id: str) -> GateSpec:
        for spec in self.gates:
            if spec.gate_id == gate_id:
                return spec
        raise KeyError(f"gate_id not in gate map: {gate_id}")

    def closure(self, gate_ids: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """The gates plus everything they depend on, transitively, in dependency-first order."""
        ordered: list[str] = []

        def visit(gate_id: str, trail: tuple[str, ...]) -> None:
            if gate_id in ordered:
                return
            if gate_id in trail:
                raise ValueError(f"gate dependency cycle: {' -> '.join((*trail, gate_id))}")
            for dep in self.gate(gate_id).upstream_gate_dependencies:
                visit(dep, (*trail, gate_id))
            ordered.append(gate_id)

        for gid in gate_ids:
            visit(gid, ())
        return tuple(ordered)


class BundleMember(msgspec.Struct, frozen=True, kw_only=True):
    """One artefact a gate's ``index.json`` lists: its path relative to the bundle root, and the sha256
    the index claims for it (when it claims one)."""

    path: str
    sha256_hex: str | None = None
    artifact_id: str | None = None


class IndexProblem(msgspec.Struct, frozen=True, kw_only=True):
    """Why an ``index.json`` cannot be used: a stable code (``INDEX_*``) and a sentence for an operator."""

    code: str
    detail: str


class BundleIndexError(ValueError):
    """An ``index.json`` that does not say which files the gate covers; ``problems`` lists every reason."""

    def __init__(self, problems: list[IndexProblem]) -> None:
        super().__init__("; ".join(f"{p.code}: {p.detail}" for p in problems))
        self.problems = tuple(problems)


_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_INDEX_SHAPES = "a JSON array of artefact entries, or an object with an `artifacts` (or `members`) array"


def _member_path_problem(path: str) -> str | None:
    if path.startswith("/") or "\\" in path:
        return "is not a relative path with `/` separators"
    if any(seg in ("", ".", "..") for seg in path.split("/")):
        return "has an empty, `.` or `..` segment (members must lie inside the bundle)"
    return None


def _parse_entry(i: int, entry: object, problems: list[IndexProblem]) -> BundleMember | None:
    def bad(why: str) -> None:
        problems.append(IndexProblem(code="INDEX_ENTRY_INVALID", detail=f"entry {i} {why}"))

    if not isinstance(entry, dict):
        bad(f"is a JSON {_json_kind(entry)}, not an object with a `path`")
        return None
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        bad("has no `path` string")
        return None
    why = _member_path_problem(path)
    if why is not None:
        bad(f"path {path!r} {why}")
        return None
    digest = entry.get("sha256_hex")
    if digest is not None and (not isinstance(digest, str) or not _HEX64.match(digest)):
        bad(f"({path}) has a `sha256_hex` that is not 64 hex digits: {str(digest)[:80]!r}")
        return None
    artifact_id = entry.get("artifact_id")
    if artifact_id is not None and not isinstance(artifact_id, str):
        bad(f"({path}) has an `artifact_id` that is not a string")
        return None
    return BundleMember(path=path, sha256_hex=digest.lower() if digest else None, artifact_id=artifact_id)


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def parse_bundle_index(raw: bytes) -> tuple[BundleMember, ...]:
    """The members a HashGate bundle's ``index.json`` lists, in any of the forms engines write:

    - a JSON array of artefact entries ``{"artifact_id", "path", "sha256_hex"?}`` (real engines);
    - an object with an ``artifacts`` array of such entries (real engines);
    - an object with a ``members`` array (``{"path", "sha256_hex"?}``, what our generator writes).

    Paths are relative to the bundle root. Raises ``BundleIndexError`` listing every problem found
    (undecodable JSON, an unknown shape, each bad entry, duplicate paths, no members at all).
    """
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise BundleIndexError(
            [IndexProblem(code="INDEX_NOT_JSON", detail=f"index.json is not UTF-8 text (byte {exc.start})")]
        ) from exc
    except json.JSONDecodeError as exc:
        raise BundleIndexError(
            [
                IndexProblem(
                    code="INDEX_NOT_JSON",
                    detail=f"index.json is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                )
            ]
        ) from exc
    except RecursionError as exc:
        raise BundleIndexError(
            [IndexProblem(code="INDEX_NOT_JSON", detail="index.json is nested too deeply to be an index")]
        ) from exc
    entries: object
    if isinstance(doc, list):
        entries = doc
    elif isinstance(doc, dict) and ("artifacts" in doc) != ("members" in doc):
        key = "artifacts" if "artifacts" in doc else "members"
        entries = doc[key]
        if not isinstance(entries, list):
            raise BundleIndexError(
                [
                    IndexProblem(
                        code="INDEX_SHAPE_UNKNOWN",
                        detail=f"index.json `{key}` is a JSON {_json_kind(entries)}, not an array of entries",
                    )
                ]
            )
    else:
        found = f"an object with keys {sorted(doc)[:8]}" if isinstance(doc, dict) else f"a JSON {_json_kind(doc)}"
        raise BundleIndexError(
            [IndexProblem(code="INDEX_SHAPE_UNKNOWN", detail=f"index.json is {found}; expected {_INDEX_SHAPES}")]
        )
    assert isinstance(entries, list)
    problems: list[IndexProblem] = []
    members: list[BundleMember] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        member = _parse_entry(i, entry, problems)
        if member is None:
            continue
        if member.path in seen:
            problems.append(IndexProblem(code="INDEX_DUPLICATE_PATH", detail=f"{member.path} is listed twice"))
            continue
        seen.add(member.path)
        members.append(member)
    if not entries:
        problems.append(
            IndexProblem(code="INDEX_EMPTY", detail="index.json lists no artefacts: the gate vouches for nothing")
        )
    if problems:
        raise BundleIndexError(problems)
    return tuple(members)


class RunReceipt(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of run_receipt.json every reader relies on; an engine may add more."""

    run_id: str
    manifest_fingerprint: str
    parameter_hash: str
    seed: int
    created_utc: str

    def tokens(self, scenario_id: str) -> dict[str, str]:
        return {
            "run_id": self.run_id,
            "manifest_fingerprint": self.manifest_fingerprint,
            "parameter_hash": self.parameter_hash,
            "seed": str(self.seed),
            "scenario_id": scenario_id,
        }


def catalogue_path() -> Path:
    return Path(str(resources.files(_INTERFACE_PACKAGE).joinpath(CATALOGUE_FILENAME)))


def gate_map_path() -> Path:
    return Path(str(resources.files(_INTERFACE_PACKAGE).joinpath(GATE_MAP_FILENAME)))


def file_digest(path: Path) -> str:
    """sha256 of a file's raw bytes (the oracle's catalogue_digest / gate_map_digest)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def _load_catalogue_cached(path: str, mtime_ns: int) -> Catalogue:
    return msgspec.convert(yaml.safe_load(Path(path).read_text(encoding="utf-8")), Catalogue)


@functools.cache
def _load_gate_map_cached(path: str, mtime_ns: int) -> GateMap:
    return msgspec.convert(yaml.safe_load(Path(path).read_text(encoding="utf-8")), GateMap)


def load_catalogue(path: Path | str | None = None) -> Catalogue:
    p = Path(path) if path is not None else catalogue_path()
    # Cached per (path, mtime): parsing is cheap but callers ask often; an edited file is re-read.
    return _load_catalogue_cached(str(p), p.stat().st_mtime_ns)


def load_gate_map(path: Path | str | None = None) -> GateMap:
    p = Path(path) if path is not None else gate_map_path()
    return _load_gate_map_cached(str(p), p.stat().st_mtime_ns)


class _StrictTokens(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise KeyError(f"path template token has no value: {{{key}}}")


def render_template(template: str, tokens: Mapping[str, Any]) -> str:
    """Fill `{token}`s of a catalogue or gate-map template; a token without a value is an error."""
    return template.format_map(_StrictTokens({k: str(v) for k, v in tokens.items()}))


def read_run_receipt(engine_run_root: Path | str) -> RunReceipt:
    path = Path(engine_run_root) / RUN_RECEIPT_FILENAME
    return msgspec.json.decode(path.read_bytes(), type=RunReceipt)


def read_run_receipt_raw(engine_run_root: Path | str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(engine_run_root) / RUN_RECEIPT_FILENAME).read_text("utf-8"))
    return data


def output_path_pattern(
    output_id: str, receipt: RunReceipt, scenario_id: str, catalogue: Catalogue | None = None
) -> str:
    """The output's path template rendered for one world, relative to the run root (may contain `*`)."""
    spec = (catalogue or load_catalogue()).output(output_id)
    return render_template(spec.path_template, receipt.tokens(scenario_id))


def output_paths(
    engine_run_root: Path | str,
    output_id: str,
    scenario_id: str,
    catalogue: Catalogue | None = None,
    receipt: RunReceipt | None = None,
) -> list[Path]:
    """The files of one output under a local engine run root, sorted by path (empty if none exist)."""
    root = Path(engine_run_root)
    receipt = receipt or read_run_receipt(root)
    pattern = output_path_pattern(output_id, receipt, scenario_id, catalogue)
    # glob.escape on the root: a run root path may itself contain `[` or `*`.
    return sorted(Path(p) for p in glob.glob(str(Path(glob.escape(str(root))) / pattern)))


def partition_tokens(path: Path | str) -> dict[str, str]:
    """`key=value` directory segments of a hive-partitioned path (the path-embed equality check)."""
    out: dict[str, str] = {}
    for part in Path(path).parts:
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out
