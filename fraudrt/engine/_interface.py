"""The engine interface: output catalogue, gate map, run receipt and path rendering.

These are what the oracle (pack, check, stream-sort) and SR read, for our generated worlds and for any
world written in the engine's format; nothing here knows how a world was produced.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
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
    name: str
    type: str
    nullable: bool = False


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
