"""`fraudrt engine generate`: write a synthetic world in the engine's format."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import click
import msgspec

from fraudrt.config import project_root
from fraudrt.engine import CampaignMix, GenerateRequest, generate_world

from ._common import echo_json

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `6h`, `7d` -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise click.BadParameter(f"not a duration (e.g. 90s, 15m, 6h, 7d): {text!r}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_start(text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 instant: {text!r}") from exc
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def default_out(name: str) -> Path:
    # Generated data lives under the project's .fraudrt/ (git-ignored): worlds are never committed.
    return project_root() / ".fraudrt" / "worlds" / name


def _mix(text: str | None) -> CampaignMix:
    if not text:
        return CampaignMix()
    shares: dict[str, float] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"campaign mix items are type=share: {item!r}")
        try:
            shares[key.strip()] = float(value)
        except ValueError as exc:
            raise click.BadParameter(f"not a number: {value!r}") from exc
    try:
        return msgspec.convert({"card_testing": 0.0, "account_takeover": 0.0, "mule_ring": 0.0, **shares}, CampaignMix)
    except msgspec.ValidationError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group()
def engine() -> None:
    """Synthetic engine worlds (run receipt, six outputs, validation gates)."""


@engine.command("generate")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory that receives <run_id>/ (default: <project>/.fraudrt/worlds/<name>).",
)
@click.option("--name", default=None, help="World name under .fraudrt/worlds (default: <scenario_id>-seed<seed>).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=42, show_default=True)
@click.option("--flows", type=click.IntRange(min=1), default=None, help="Number of flows (arrivals).")
@click.option("--duration", default=None, help="Simulated window, e.g. 6h or 7d.")
@click.option("--start", default="2026-01-01T00:00:00Z", show_default=True, help="Window start (UTC).")
@click.option("--fraud-rate", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.02, show_default=True)
@click.option(
    "--campaign-mix", default=None, help="e.g. card_testing=0.5,account_takeover=0.3,mule_ring=0.2 (omitted types: 0)."
)
@click.option("--parts", type=click.IntRange(min=1), default=4, show_default=True, help="Part files per output.")
@click.option("--scenario-id", default="baseline_v1", show_default=True)
@click.option(
    "--mode",
    "modes",
    type=click.Choice(["baseline", "fraud"]),
    multiple=True,
    help="Outputs to write (default: both modes).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run root of the same world.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def generate_cmd(
    out: Path | None,
    name: str | None,
    seed: int,
    flows: int | None,
    duration: str | None,
    start: str,
    fraud_rate: float,
    campaign_mix: str | None,
    parts: int,
    scenario_id: str,
    modes: tuple[str, ...],
    overwrite: bool,
    as_json: bool,
) -> None:
    """Generate a world. Give --flows, --duration or both (the other follows ~60 arrivals/s)."""
    if flows is None and duration is None:
        raise click.UsageError("give --flows, --duration or both")
    out_dir = out if out is not None else default_out(name or f"{scenario_id}-seed{seed}")
    try:
        req = msgspec.convert(
            {
                "out_dir": str(out_dir),
                "seed": seed,
                "n_flows": flows,
                "duration_s": parse_duration(duration) if duration else None,
                "fraud_rate": fraud_rate,
                "n_parts": parts,
                "scenario_id": scenario_id,
                "modes": list(modes) if modes else ["baseline", "fraud"],
                "overwrite": overwrite,
            },
            GenerateRequest,
        )
        req = msgspec.structs.replace(req, start_utc=parse_start(start), campaign_mix=_mix(campaign_mix))
        summary = generate_world(req)
    except (ValueError, FileExistsError, msgspec.ValidationError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(msgspec.to_builtins(summary))
        return
    click.echo(f"engine run root  {summary.engine_run_root}")
    click.echo(f"run_id           {summary.run_id}")
    click.echo(f"world            seed={summary.seed} scenario_id={summary.scenario_id}")
    click.echo(f"                 manifest_fingerprint={summary.manifest_fingerprint}")
    click.echo(f"                 parameter_hash={summary.parameter_hash}")
    click.echo(f"window           {summary.min_ts_utc} .. {summary.max_ts_utc}")
    campaigns = ", ".join(f"{k}={v}" for k, v in summary.campaigns.items()) or "none"
    click.echo(f"flows            {summary.n_flows} ({summary.n_fraud_flows} fraud; campaigns: {campaigns})")
    for oid, rows in summary.row_counts.items():
        click.echo(f"  {oid:32} {rows:>12,} rows in {summary.part_counts[oid]} parts")
    rate = summary.n_flows / summary.elapsed_s * 60 if summary.elapsed_s else 0.0
    click.echo(f"wrote {summary.bytes_written / 1e6:.1f} MB in {summary.elapsed_s:.2f}s ({rate:,.0f} flows/min)")
