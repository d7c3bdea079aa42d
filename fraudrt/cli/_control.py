"""`fraudrt sr ready [--reuse]` and `fraudrt wsp ready-consumer --once` (Control + Ingress, seed steps 5, 6)."""

from __future__ import annotations

import os

import click
import msgspec

from fraudrt.control_ingress.scenario_runner import ReadyRequest, ScenarioRunnerError, sr_ready
from fraudrt.control_ingress.world_stream_producer import (
    IgRetryExhausted,
    ReadyConsumerOnceRequest,
    ready_consumer_once,
)
from fraudrt.runtime.packs import RunError, active_run_id

from ._common import CliState, echo_json, pass_state, run_async


@click.group("sr")
def sr() -> None:
    """Scenario Runner: announce a sealed oracle world as READY on the control bus."""


@sr.command("ready")
@click.option("--reuse", is_flag=True, help="Reuse the run of an existing equivalence key and re-emit its READY.")
@click.option("--run-equivalence-key", envvar="SR_RUN_EQUIVALENCE_KEY", default=None,
              help="Names the scenario run (env SR_RUN_EQUIVALENCE_KEY).")
@click.option("--engine-run-root", default=None,
              help="s3://oracle-store/<root> (default: Settings.sr.engine_run_root / ORACLE_ENGINE_RUN_ROOT).")
@click.option("--scenario-id", default=None, help="Default: Settings.sr.scenario_id.")
@click.option("--mode", type=click.Choice(["fraud", "baseline"]), default=None, help="Default: Settings.sr.mode.")
@click.option("--window-start", default=None, help="Optional intent window start (recorded, part of the intent).")
@click.option("--window-end", default=None, help="Optional intent window end.")
@pass_state
def sr_ready_cmd(state: CliState, reuse: bool, run_equivalence_key: str | None, engine_run_root: str | None,
                 scenario_id: str | None, mode: str | None, window_start: str | None, window_end: str | None) -> None:
    """Verify seal + stream views, commit the SR ledger, publish READY (deterministic message_id)."""
    settings = state.settings
    try:
        platform_run_id = active_run_id(settings)
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc
    root = engine_run_root or settings.sr.engine_run_root or os.environ.get("ORACLE_ENGINE_RUN_ROOT") or ""
    request = ReadyRequest(
        platform_run_id=platform_run_id, run_equivalence_key=run_equivalence_key or "", engine_run_root=root,
        scenario_id=scenario_id or settings.sr.scenario_id, mode=mode or settings.sr.mode,  # type: ignore[arg-type]
        reuse=reuse, window_start_utc=window_start, window_end_utc=window_end)
    try:
        result = run_async(sr_ready, settings, request)
    except ScenarioRunnerError as exc:
        raise click.ClickException(str(exc)) from exc
    echo_json(msgspec.to_builtins(result))


@click.group("wsp")
def wsp() -> None:
    """World Stream Producer (the daemon form runs in `fraudrt pack up control_ingress`)."""


@wsp.command("ready-consumer")
@click.option("--once", is_flag=True, help="Read READY once, stream it in-process, exit.")
@click.option("--max-events-per-output", type=int, default=None,
              help="Cap per output (default: Settings.wsp.max_events_per_output / WSP_MAX_EVENTS_PER_OUTPUT).")
@pass_state
def ready_consumer_cmd(state: CliState, once: bool, max_events_per_output: int | None) -> None:
    """Consume READY from sr-control-bus and stream the world to IG."""
    if not once:
        raise click.ClickException("only --once is offered here; the daemon is `fraudrt pack up control_ingress`")
    settings = state.settings
    try:
        platform_run_id = active_run_id(settings)
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        result = run_async(ready_consumer_once, settings,
                           ReadyConsumerOnceRequest(platform_run_id=platform_run_id,
                                                    max_events_per_output=max_events_per_output))
    except IgRetryExhausted as exc:
        raise click.ClickException(f"{exc}; run again to resume from the checkpoint") from exc
    echo_json(msgspec.to_builtins(result))
    if any(s.status != "STREAMED" for s in result.streams):
        raise SystemExit(1)
