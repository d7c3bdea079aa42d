"""`fraudrt run new` and `fraudrt pack up|down|status` (Run/Operate)."""

from __future__ import annotations

import click

from fraudrt.runtime.packs import (
    PackError,
    RunError,
    active_run_id,
    list_manifests,
    new_run,
    pack_down,
    pack_status,
    pack_up,
)

from ._common import CliState, echo_json, pass_state


@click.group("run")
def run_group() -> None:
    """Platform runs (runs/fraud-platform/ACTIVE_RUN_ID)."""


@run_group.command("new")
@pass_state
def run_new(state: CliState) -> None:
    """Mint a platform_run_id and make it the active run."""
    click.echo(new_run(state.settings))


@run_group.command("active")
@pass_state
def run_active(state: CliState) -> None:
    try:
        click.echo(active_run_id(state.settings))
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def pack() -> None:
    """Always-on packs: one process and event loop per pack manifest (packs/*.yaml)."""


def _names(name: str) -> list[str]:
    return [m.short_name for m in list_manifests()] if name == "all" else [name]


@pack.command("up")
@click.argument("name")
@pass_state
def up_cmd(state: CliState, name: str) -> None:
    """Start pack NAME (id or short name, e.g. rtdl_core) for the active run."""
    for one in _names(name):
        try:
            result = pack_up(state.settings, one)
        except (PackError, RunError) as exc:
            raise click.ClickException(str(exc)) from exc
        note = f" (optional components not built yet: {len(result['missing_optional'])})" \
            if result["missing_optional"] else ""
        click.echo(f"{result['pack_id']}: {result['state']} pid={result['pid']} "
                   f"run={result['platform_run_id']}{note}")


@pack.command("down")
@click.argument("name")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to drain before SIGKILL.")
@pass_state
def down_cmd(state: CliState, name: str, timeout: float) -> None:
    """Drain and stop pack NAME."""
    for one in _names(name):
        try:
            result = pack_down(state.settings, one, timeout=timeout)
        except PackError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{result['pack_id']}: {result['state']}")


@pack.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def status_cmd(state: CliState, name: str, as_json: bool) -> None:
    """Process state and per-component health; exit 1 if a pack is not running."""
    reports = []
    for one in _names(name):
        try:
            reports.append(pack_status(state.settings, one))
        except PackError as exc:
            raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(reports if name == "all" else reports[0])
    else:
        for r in reports:
            health = f" health={r['health_state']}" if r.get("health_state") else ""
            click.echo(f"{r['pack_id']}: {r['state']}{health} pid={r['pid']} run={r['platform_run_id']}")
            for comp, info in sorted(r["components"].items()):
                click.echo(f"  {comp:28} {info['health_state']:5} running={info['running']} "
                           f"restarts={info['restarts']}")
                for reason in info.get("reasons", []):
                    click.echo(f"      {reason}")
            outbox = r.get("outbox")
            if outbox:
                click.echo(f"  {'(outbox relay)':28} {outbox['health_state']:5} pending={outbox['pending']} "
                           f"parked={outbox['parked_now']} published={outbox['published']}")
            for reader, info in sorted(r.get("readers", {}).items()):
                if info["health_state"] != "GREEN":
                    click.echo(f"  (reader) {reader} {info['health_state']}: {'; '.join(info['reasons'])}")
            for missing in r["missing_optional"]:
                click.echo(f"  (not built yet, optional) {missing}")
            for missing in r["missing"]:
                click.echo(f"  (not built yet, required) {missing}")
    raise SystemExit(0 if all(r["state"] == "running" for r in reports) else 1)
