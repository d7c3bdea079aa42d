"""Catalogue, gate map, path rendering and HashGate verification (what the oracle reuses)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from fraudrt.engine import (
    GenerateRequest,
    WorldSummary,
    catalogue_path,
    file_digest,
    gate_map_path,
    generate_world,
    load_catalogue,
    load_gate_map,
    output_path_pattern,
    output_paths,
    parse_passed_flag,
    read_run_receipt,
    read_run_receipt_raw,
    render_template,
    verify_gate,
)

pytestmark = pytest.mark.unit

GATE_6B = "gate.layer3.6B.validation"
GATE_5B = "gate.layer2.5B.validation"
WORLD_PK = ["seed", "manifest_fingerprint", "scenario_id"]


@pytest.fixture()
def world(tmp_path: Path) -> WorldSummary:
    # Function-scoped: several tests tamper with the files.
    return generate_world(GenerateRequest(out_dir=str(tmp_path), n_flows=1500, duration_s=86400.0, n_parts=2))


def test_catalogue_has_the_reference_outputs_and_keys() -> None:
    cat = load_catalogue()
    assert set(cat.output_ids) == {
        "arrival_events_5B",
        "s1_arrival_entities_6B",
        "s2_flow_anchor_baseline_6B",
        "s2_event_stream_baseline_6B",
        "s3_flow_anchor_with_fraud_6B",
        "s3_event_stream_with_fraud_6B",
    }
    arrival_pk = [*WORLD_PK, "merchant_id", "arrival_seq"]
    assert list(cat.output("arrival_events_5B").primary_key) == arrival_pk
    assert list(cat.output("s1_arrival_entities_6B").primary_key) == arrival_pk
    for oid in ("s2_flow_anchor_baseline_6B", "s3_flow_anchor_with_fraud_6B"):
        assert list(cat.output(oid).primary_key) == [*WORLD_PK, "flow_id"]
    for oid in ("s2_event_stream_baseline_6B", "s3_event_stream_with_fraud_6B"):
        assert list(cat.output(oid).primary_key) == [*WORLD_PK, "flow_id", "event_seq"]
        assert cat.output(oid).role == "traffic"
    assert list(cat.output("arrival_events_5B").read_requires_gates) == [GATE_5B]
    assert "parameter_hash" not in cat.output("arrival_events_5B").path_template
    for spec in cat.outputs:
        tokens = re.findall(r"\{(\w+)\}", spec.path_template)
        assert tokens == list(spec.partitions), spec.output_id  # partitions in path order
        assert set(spec.primary_key) <= set(spec.column_names), spec.output_id
        assert set(spec.partitions) <= set(spec.column_names), spec.output_id
        assert spec.availability == "required" and spec.scope.startswith("scope_")
        assert spec.path_template.endswith("/part-*.parquet")
    fraud_cols = {"fraud_flag", "campaign_id"}
    assert fraud_cols <= set(cat.output("s3_flow_anchor_with_fraud_6B").column_names)
    assert not fraud_cols & set(cat.output("s2_flow_anchor_baseline_6B").column_names)


def test_gate_map_covers_every_read_gate() -> None:
    gates = load_gate_map()
    for spec in load_catalogue().outputs:
        for gid in spec.read_requires_gates:
            assert spec.output_id in gates.gate(gid).authorizes_outputs
    assert gates.closure([GATE_6B]) == (GATE_5B, GATE_6B)
    assert gates.gate(GATE_6B).verification_method.digest_field == "sha256_hex"
    assert gates.gate(GATE_5B).verification_method.digest_field == "bundle_digest_sha256"
    for gate in gates.gates:
        assert gate.passed_flag_path_template.endswith("manifest_fingerprint={manifest_fingerprint}/_passed.flag")


def test_interface_files_are_plain_yaml_package_data() -> None:
    for path in (catalogue_path(), gate_map_path()):
        assert path.is_file() and isinstance(yaml.safe_load(path.read_text()), dict)


def test_render_template_refuses_missing_tokens() -> None:
    assert render_template("a/seed={seed}/x", {"seed": 42}) == "a/seed=42/x"
    with pytest.raises(KeyError):
        render_template("a/seed={seed}/{scenario_id}", {"seed": 42})


def test_output_paths_find_the_parts(world: WorldSummary) -> None:
    receipt = read_run_receipt(world.engine_run_root)
    for oid in load_catalogue().output_ids:
        pattern = output_path_pattern(oid, receipt, "baseline_v1")
        assert "{" not in pattern and pattern.endswith("part-*.parquet")
        paths = output_paths(world.engine_run_root, oid, "baseline_v1")
        assert len(paths) == world.part_counts[oid] == 2
    assert output_paths(world.engine_run_root, "s3_event_stream_with_fraud_6B", "other_scenario") == []
    raw = read_run_receipt_raw(world.engine_run_root)
    assert raw["catalogue_digest"] == file_digest(catalogue_path())
    assert raw["gate_map_digest"] == file_digest(gate_map_path())


def test_passed_flag_formats() -> None:
    digest = "ab" * 32
    assert parse_passed_flag(f"sha256_hex = {digest}\n", "sha256_hex") == digest
    assert parse_passed_flag(json.dumps({"bundle_digest_sha256": digest}), "bundle_digest_sha256") == digest
    assert parse_passed_flag(f"other = {digest}\n", "sha256_hex") is None
    assert parse_passed_flag("{not json", "sha256_hex") is None


def _bundle(world: WorldSummary, segment_path: str) -> Path:
    return Path(world.engine_run_root) / segment_path / f"manifest_fingerprint={world.manifest_fingerprint}"


@pytest.mark.parametrize(
    ("gate_id", "where"), [(GATE_6B, "data/layer3/6B/validation"), (GATE_5B, "data/layer2/5B/validation")]
)
def test_gate_digest_recomputes_independently(world: WorldSummary, gate_id: str, where: str) -> None:
    bundle = _bundle(world, where)
    index = json.loads((bundle / "index.json").read_text())
    members = sorted(m["path"] for m in index["members"])
    assert members and "index.json" not in members and "_passed.flag" not in members
    expected = hashlib.sha256(b"".join((bundle / m).read_bytes() for m in members)).hexdigest()
    field = load_gate_map().gate(gate_id).verification_method.digest_field
    assert parse_passed_flag((bundle / "_passed.flag").read_text(), field) == expected
    result = verify_gate(world.engine_run_root, gate_id, world.manifest_fingerprint)
    assert result.ok and result.reason == "OK" and result.actual_digest == expected


def test_gate_report_vouches_for_every_data_file(world: WorldSummary) -> None:
    report = json.loads((_bundle(world, "data/layer3/6B/validation") / "s5_validation_report_6B.json").read_text())
    assert report["overall_status"] == "PASS"
    root = Path(world.engine_run_root)
    listed = {f["path"]: f["sha256_hex"] for o in report["outputs"].values() for f in o["files"]}
    assert len(listed) == 5 * 2
    for rel, digest in listed.items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest


def test_gate_verification_catches_tampering(world: WorldSummary) -> None:
    bundle = _bundle(world, "data/layer3/6B/validation")
    report = bundle / "s5_validation_report_6B.json"
    report.write_bytes(report.read_bytes().replace(b'"PASS"', b'"FAIL"', 1))
    assert verify_gate(world.engine_run_root, GATE_6B, world.manifest_fingerprint).reason == "MEMBER_DIGEST_MISMATCH"
    # Consistent index but a flag that no longer matches: the digest check catches it.
    index = json.loads((bundle / "index.json").read_text())
    index["members"][0]["sha256_hex"] = hashlib.sha256(report.read_bytes()).hexdigest()
    (bundle / "index.json").write_text(json.dumps(index))
    assert verify_gate(world.engine_run_root, GATE_6B, world.manifest_fingerprint).reason == "DIGEST_MISMATCH"
    # Existence-only (non-strict) reads still pass; a missing flag fails both ways.
    assert verify_gate(world.engine_run_root, GATE_6B, world.manifest_fingerprint, strict=False).ok
    (bundle / "_passed.flag").unlink()
    assert (
        verify_gate(world.engine_run_root, GATE_6B, world.manifest_fingerprint, strict=False).reason == "FLAG_MISSING"
    )
    assert verify_gate(world.engine_run_root, GATE_5B, world.manifest_fingerprint).ok
