"""Validation gate bundles (HashGate): writing them and verifying them (control_ingress §3.6).

A bundle is a folder of member files plus ``index.json`` (which lists the members with their sha256) and
``_passed.flag`` (which carries the bundle digest). The digest is sha256 over the raw bytes of every
member listed in index.json, concatenated in ASCII-lexical order of member path; ``_passed.flag`` and
``index.json`` never take part. A reader in strict mode recomputes it and compares it with the flag.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from ._interface import BundleIndexError, GateMap, GateSpec, load_gate_map, parse_bundle_index, render_template

_KV_LINE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*=\s*([^\s#]+)\s*$")


class GateVerification(msgspec.Struct, frozen=True, kw_only=True):
    gate_id: str
    ok: bool
    reason: str  # OK | FLAG_MISSING | FLAG_UNREADABLE | INDEX_MISSING | INDEX_INVALID | MEMBER_MISSING | ...
    flag_path: str
    expected_digest: str | None = None
    actual_digest: str | None = None


def bundle_members(member_paths: list[str], exclude: tuple[str, ...]) -> list[str]:
    """The members a gate digest covers, in digest order: ASCII-lexical (plain code-point order of the
    relative path strings), without the flag and index files. Readers of any store use this order."""
    return sorted(p for p in member_paths if p.rsplit("/", 1)[-1] not in exclude)


def bundle_digest(bundle_root: Path, member_paths: list[str], exclude: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for rel in bundle_members(member_paths, exclude):
        h.update((bundle_root / rel).read_bytes())
    return h.hexdigest()


def format_passed_flag(digest_field: str, digest: str, flag_format: str) -> bytes:
    if flag_format == "json":
        return (json.dumps({digest_field: digest}, sort_keys=True, separators=(",", ":")) + "\n").encode()
    if flag_format == "kv_text":
        return f"{digest_field} = {digest}\n".encode()
    raise ValueError(f"unknown passed flag format: {flag_format}")


def parse_passed_flag(text: str, digest_field: str) -> str | None:
    """The digest from a flag in either format real engines write (JSON object or `key = value` text)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            return None
        value = obj.get(digest_field) if isinstance(obj, dict) else None
        return value if isinstance(value, str) else None
    for line in stripped.splitlines():
        m = _KV_LINE.match(line)
        if m and m.group(1) == digest_field:
            return m.group(2)
    return None


def write_gate_bundle(
    engine_run_root: Path,
    gate: GateSpec,
    manifest_fingerprint: str,
    members: Mapping[str, bytes],
    index_extra: Mapping[str, Any] | None = None,
) -> str:
    """Write the members, index.json and _passed.flag of one gate; return the bundle digest."""
    tokens = {"manifest_fingerprint": manifest_fingerprint}
    bundle_root = engine_run_root / render_template(gate.bundle_root_template, tokens)
    bundle_root.mkdir(parents=True, exist_ok=True)
    exclude = gate.verification_method.exclude_filenames
    for rel, data in members.items():
        if Path(rel).name in exclude:
            raise ValueError(f"a gate member may not be named {Path(rel).name}")
        target = bundle_root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    index = {
        **(index_extra or {}),
        "gate_id": gate.gate_id,
        "manifest_fingerprint": manifest_fingerprint,
        "members": [{"path": rel, "sha256_hex": hashlib.sha256(members[rel]).hexdigest()} for rel in sorted(members)],
    }
    index_path = engine_run_root / render_template(gate.index_path_template, tokens)
    index_path.write_bytes((json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    digest = bundle_digest(bundle_root, list(members), exclude)
    flag_path = engine_run_root / render_template(gate.passed_flag_path_template, tokens)
    vm = gate.verification_method
    flag_path.write_bytes(format_passed_flag(vm.digest_field, digest, vm.flag_format))
    return digest


def verify_gate(
    engine_run_root: Path | str,
    gate_id: str,
    manifest_fingerprint: str,
    gate_map: GateMap | None = None,
    strict: bool = True,
) -> GateVerification:
    """Check one gate of a local engine run root: flag present and, when strict, the digest recomputed."""
    root = Path(engine_run_root)
    gate = (gate_map or load_gate_map()).gate(gate_id)
    tokens = {"manifest_fingerprint": manifest_fingerprint}
    flag_path = root / render_template(gate.passed_flag_path_template, tokens)

    def result(ok: bool, reason: str, **kw: str | None) -> GateVerification:
        return GateVerification(gate_id=gate_id, ok=ok, reason=reason, flag_path=str(flag_path), **kw)

    if not flag_path.is_file():
        return result(False, "FLAG_MISSING")
    expected = parse_passed_flag(flag_path.read_text("utf-8", errors="replace"), gate.verification_method.digest_field)
    if expected is None:
        return result(False, "FLAG_UNREADABLE")
    if not strict:
        return result(True, "OK", expected_digest=expected)
    index_path = root / render_template(gate.index_path_template, tokens)
    if not index_path.is_file():
        return result(False, "INDEX_MISSING", expected_digest=expected)
    try:
        entries = parse_bundle_index(index_path.read_bytes())
    except BundleIndexError:
        return result(False, "INDEX_INVALID", expected_digest=expected)
    members = [m.path for m in entries]
    bundle_root = root / render_template(gate.bundle_root_template, tokens)
    missing = [m for m in members if not (bundle_root / m).is_file()]
    if missing:
        return result(False, "MEMBER_MISSING", expected_digest=expected, actual_digest=None)
    for entry in entries:
        listed = entry.sha256_hex
        if listed is not None and hashlib.sha256((bundle_root / entry.path).read_bytes()).hexdigest() != listed:
            return result(False, "MEMBER_DIGEST_MISMATCH", expected_digest=expected)
    actual = bundle_digest(bundle_root, members, gate.verification_method.exclude_filenames)
    if actual != expected:
        return result(False, "DIGEST_MISMATCH", expected_digest=expected, actual_digest=actual)
    return result(True, "OK", expected_digest=expected, actual_digest=actual)
