"""`oracle check --strict` on worlds laid out the way real engines write them, and on broken ones.

Real engines (control_ingress.md §3) write a HashGate bundle's index.json as a JSON array of artefact
entries or as an object with an `artifacts` array, and may leave out columns their schema marks
optional. Every problem the check finds must be a named finding an operator can act on, never an
exception text.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import polars as pl
import pytest
from botocore.exceptions import EndpointConnectionError
from click.testing import CliRunner

from fraudrt.cli import cli
from fraudrt.config import Settings, load_settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from fraudrt.engine import GenerateRequest, generate_world, verify_gate
from fraudrt.oracle import CheckReport, CheckRequest, PackRequest, check_engine_root, pack_engine_root
from fraudrt.oracle._check import check_in_store
from fraudrt.oracle._store import LocalStore, parse_engine_root
from tests.support.engine_layout import as_real_engine, bundle_dir, generated_members

pytestmark = pytest.mark.unit

SCENARIO = "baseline_v1"
GATE_6B = "gate.layer3.6B.validation"
GATE_5B = "gate.layer2.5B.validation"


@pytest.fixture(scope="module")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    return Path(generate_world(GenerateRequest(out_dir=str(out), n_flows=1_500, seed=3, n_parts=2)).engine_run_root)


@pytest.fixture
def world(world_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / world_template.name
    shutil.copytree(world_template, target)
    return target


@pytest.fixture
def settings() -> Settings:
    return load_settings("embedded")


def _check(settings: Settings, world: Path, strict: bool = True) -> CheckReport:
    request = CheckRequest(engine_run_root=str(world), scenario_id=SCENARIO, strict=strict)
    return anyio.run(check_engine_root, settings, request)


def _strict_cli(world: Path) -> Any:
    return CliRunner().invoke(
        cli, ["oracle", "check", "--strict", "--engine-run-root", str(world), "--scenario-id", SCENARIO]
    )


def test_a_world_laid_out_like_a_real_engine_passes_the_strict_check(world: Path, settings: Settings) -> None:
    as_real_engine(world)
    anyio.run(pack_engine_root, settings, PackRequest(engine_run_root=str(world), scenario_id=SCENARIO))
    result = _strict_cli(world)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("OK: 0 errors, 0 warnings; 2 gates")
    mf = next(world.glob("data/layer3/6B/validation/*")).name.split("=", 1)[1]
    assert verify_gate(world, GATE_6B, mf).ok and verify_gate(world, GATE_5B, mf).ok

    # A required column stays required even when nullable: campaign_id dropped from one file fails.
    events = sorted(world.glob("data/layer3/6B/s3_event_stream_with_fraud_6B/**/part-*.parquet"))[0]
    pl.read_parquet(events).drop("campaign_id").write_parquet(events)
    failed = _strict_cli(world)
    assert failed.exit_code == 1, failed.output
    report = _check(settings, world)
    [missing] = [i for i in report.errors]
    assert missing.code == "OUTPUT_COLUMN_MISSING" and missing.path.endswith(events.relative_to(world).as_posix())
    assert "'campaign_id'" in missing.detail and "nullable, but required" in missing.detail


def test_an_optional_column_present_must_still_have_its_type(world: Path, settings: Settings) -> None:
    part = next(world.glob("data/layer2/5B/arrival_events/**/part-*.parquet"))
    df = pl.read_parquet(part)
    df.with_columns(pl.col("lambda_realised").cast(pl.String)).write_parquet(part)
    [issue] = _check(settings, world, strict=False).errors
    assert issue.code == "OUTPUT_COLUMN_TYPE_MISMATCH" and "'lambda_realised'" in issue.detail


_DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("raw", "codes"),
    [
        (b"{not json", ["GATE_INDEX_NOT_JSON"]),
        (b"\xff\xfe[]", ["GATE_INDEX_NOT_JSON"]),
        (_DEEP, ["GATE_INDEX_NOT_JSON"]),
        (b"42", ["GATE_INDEX_SHAPE_UNKNOWN"]),
        (b'"s5_validation_report_6B.json"', ["GATE_INDEX_SHAPE_UNKNOWN"]),
        (b'{"files": []}', ["GATE_INDEX_SHAPE_UNKNOWN"]),
        (b'{"artifacts": {"path": "s5_validation_report_6B.json"}}', ["GATE_INDEX_SHAPE_UNKNOWN"]),
        (b'{"artifacts": [], "members": []}', ["GATE_INDEX_SHAPE_UNKNOWN"]),
        (b"[]", ["GATE_INDEX_EMPTY"]),
        (b'[1, "s5_validation_report_6B.json"]', ["GATE_INDEX_ENTRY_INVALID", "GATE_INDEX_ENTRY_INVALID"]),
        (b'[{"artifact_id": "s5_validation_report_6B"}]', ["GATE_INDEX_ENTRY_INVALID"]),
        (b'{"artifacts": [{"path": 7}]}', ["GATE_INDEX_ENTRY_INVALID"]),
        (b'[{"path": "/etc/passwd"}]', ["GATE_INDEX_ENTRY_INVALID"]),
        (b'[{"path": "../../../run_receipt.json"}]', ["GATE_INDEX_ENTRY_INVALID"]),
        (b'[{"path": "s5_validation_report_6B.json", "sha256_hex": "not-a-digest"}]', ["GATE_INDEX_ENTRY_INVALID"]),
        (
            b'[{"path": "s5_validation_report_6B.json"}, {"path": "s5_validation_report_6B.json"}]',
            ["GATE_INDEX_DUPLICATE_PATH"],
        ),
        (b'[{"artifact_id": "x", "path": "no_such_member.json"}]', ["GATE_MEMBER_MISSING"]),
    ],
)
def test_a_malformed_index_is_a_named_finding(world: Path, settings: Settings, raw: bytes, codes: list[str]) -> None:
    bundle = bundle_dir(world, "layer3/6B")
    (bundle / "index.json").write_bytes(raw)
    report = _check(settings, world, strict=False)
    found = [i for i in report.errors if i.detail.startswith(GATE_6B)]
    assert [i.code for i in found] == codes, report.issues
    assert report.status == "FAIL" and len(report.errors) == len(codes)
    for issue in found:
        # A sentence about the index, not a Python exception text.
        assert "list indices" not in issue.detail and "Error" not in issue.detail, issue.detail
        assert issue.path.startswith(world.as_uri())


def test_an_index_listing_a_digest_that_does_not_match_is_named(world: Path, settings: Settings) -> None:
    bundle = bundle_dir(world, "layer3/6B")
    wrong = hashlib.sha256(b"x").hexdigest()
    entries = [{"artifact_id": "r", "path": m["path"], "sha256_hex": wrong} for m in generated_members(bundle)]
    (bundle / "index.json").write_text(json.dumps({"artifacts": entries}))
    assert [i.code for i in _check(settings, world, strict=False).errors] == ["GATE_MEMBER_DIGEST_MISMATCH"]


class _FlakyStore(LocalStore):
    """A store whose endpoint is gone for one key (what botocore raises when SeaweedFS is down)."""

    def __init__(self, root: Path, broken: str) -> None:
        super().__init__(root)
        self.broken = broken

    async def get_bytes(self, key: str) -> bytes | None:
        if key.endswith(self.broken):
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/oracle-store")
        return await super().get_bytes(key)


def test_an_unreadable_store_object_is_a_finding_and_the_other_checks_still_run(
    world: Path, settings: Settings
) -> None:
    root = parse_engine_root(str(world), settings)
    index = (bundle_dir(world, "layer3/6B") / "index.json").relative_to(world).as_posix()
    store = _FlakyStore(Path(root.local_dir), index)
    request = CheckRequest(engine_run_root=str(world), scenario_id=SCENARIO)
    report = anyio.run(check_in_store, store, root, settings, request)
    [issue] = report.errors
    assert issue.code == "STORE_READ_FAILED" and issue.path.endswith("/index.json")
    assert "EndpointConnectionError" in issue.detail and "unreachable" in issue.detail
    assert len(report.gates_checked) == 2 and report.files_checked >= 6


def test_an_unknown_output_is_a_finding(world: Path, settings: Settings) -> None:
    request = CheckRequest(engine_run_root=str(world), scenario_id=SCENARIO, output_ids=("no_such_output",))
    report = anyio.run(check_engine_root, settings, request)
    assert [i.code for i in report.errors] == ["OUTPUT_UNKNOWN"]
