"""`fraudrt report`, `fraudrt conformance`, `fraudrt governance query` (Obs/Gov, seed step 11)."""

from __future__ import annotations

import json
from typing import Any

import click

from fraudrt.runtime.packs import RunError, active_run_id

from ._common import CliState, echo_json, pass_state, run_async


def _run_id(state: CliState, explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        return active_run_id(state.settings)
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc


async def _pool(state: CliState) -> Any:
    import asyncpg

    dsn = state.settings.postgres.dsn
    return await asyncpg.create_pool(dsn, min_size=1, max_size=2) if dsn else None


@click.command("report")
@click.option("--run", "run_id", default=None, help="Platform run id (default: the active run).")
@click.option("--from-bus", is_flag=True, default=None,
              help="Read the decision lane from the bus even if the obs_gov pack runs for the run.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report.")
@pass_state
def report(state: CliState, run_id: str | None, from_bus: bool | None, as_json: bool) -> None:
    """Write runs/fraud-platform/<run>/obs/platform_run_report.{json,html} now."""
    from fraudrt.obs_gov import one_shot_report

    run = _run_id(state, run_id)

    async def go() -> tuple[dict[str, Any], Any]:
        pool = await _pool(state)
        try:
            return await one_shot_report(state.settings, run, from_bus=from_bus, pool=pool)
        finally:
            if pool is not None:
                await pool.close()

    doc, (json_path, html_path) = run_async(go)
    if as_json:
        echo_json(doc)
        return
    done = doc["run_completed"]
    click.echo(f"report {json_path}\nhtml   {html_path}\n"
               f"decisions={doc['rtdl']['decisions']} outcomes={doc['rtdl']['outcomes']} "
               f"audits={doc['rtdl']['audits']} run_completed={done['run_completed']}")
    for reason in done["reasons"]:
        click.echo(f"  - {reason}")


@click.command("conformance")
@click.option("--run", "run_id", default=None, help="Platform run id (default: the active run).")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def conformance(state: CliState, run_id: str | None, as_json: bool) -> None:
    """Check the running platform live; write obs/environment_conformance.json; exit 1 unless PASS."""
    from fraudrt.obs_gov import run_conformance

    run = _run_id(state, run_id)
    result, path = run_async(run_conformance, state.settings, run)
    if as_json:
        import msgspec

        echo_json(msgspec.to_builtins(result))
    else:
        for check in result.checks:
            click.echo(f"{check.status:5} {check.check_id}")
            for reason in check.reasons:
                click.echo(f"      {reason}")
        click.echo(f"{result.status} ({path})")
    raise SystemExit(0 if result.status == "PASS" else 1)


@click.group("governance")
def governance() -> None:
    """The run's governance log (s3://<platform bucket>/<run>/obs/governance/)."""


@governance.command("query")
@click.option("--run", "run_id", default=None, help="Platform run id (default: the active run).")
@click.option("--limit", type=int, default=0, show_default=True, help="The last N events (0: all).")
@click.option("--family", default=None, help="Only this event family (e.g. ANOMALY).")
@pass_state
def governance_query(state: CliState, run_id: str | None, limit: int, family: str | None) -> None:
    """Print the run's governance events as a JSON array, oldest first."""
    from fraudrt.obs_gov import governance as gov

    run = _run_id(state, run_id)
    events = run_async(lambda: gov.query(state.settings, run, limit=limit, family=family))
    click.echo(json.dumps([gov.event_to_dict(e) for e in events], indent=2, sort_keys=True))
