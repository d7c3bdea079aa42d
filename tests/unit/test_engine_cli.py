"""`fraudrt engine generate`."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fraudrt.cli import cli
from fraudrt.cli._engine import parse_duration

pytestmark = pytest.mark.unit


def test_generate_prints_a_json_summary(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "engine",
            "generate",
            "--out",
            str(tmp_path),
            "--flows",
            "1200",
            "--duration",
            "12h",
            "--parts",
            "2",
            "--seed",
            "5",
            "--fraud-rate",
            "0.05",
            "--campaign-mix",
            "card_testing=1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["seed"] == 5 and summary["n_flows"] == 1200 and summary["n_fraud_flows"] == 60
    assert set(summary["campaigns"]) == {"card_testing"}
    assert Path(summary["engine_run_root"]) == tmp_path / summary["run_id"]
    assert summary["max_ts_utc"] < "2026-01-01T12:00:09"
    assert summary["part_counts"]["s3_event_stream_with_fraud_6B"] == 2


def test_default_out_is_under_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDRT_PROJECT_ROOT", str(tmp_path))
    result = CliRunner().invoke(cli, ["engine", "generate", "--flows", "300", "--mode", "fraud"])
    assert result.exit_code == 0, result.output
    worlds = tmp_path / ".fraudrt" / "worlds" / "baseline_v1-seed42"
    (run_root,) = worlds.iterdir()
    assert (run_root / "run_receipt.json").is_file()
    assert "s3_event_stream_with_fraud_6B" in result.output and "s2_event_stream_baseline_6B" not in result.output
    again = CliRunner().invoke(cli, ["engine", "generate", "--flows", "300", "--mode", "fraud"])
    assert again.exit_code != 0 and "exists" in again.output


def test_generate_needs_a_size(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["engine", "generate", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--flows" in result.output


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("6h", 21600.0), ("1.5d", 129600.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(click.BadParameter):
        parse_duration("soon")
