"""`fraudrt substrate up|down|status|bootstrap`."""

from __future__ import annotations

import click

from fraudrt.substrate import SubstrateError, bootstrap, down, status, up

from ._common import CliState, echo_json, pass_state, run_async


@click.group()
def substrate() -> None:
    """Start, stop and inspect S3 + Kinesis + Postgres."""


@substrate.command("up")
@click.option("--fast-pg", is_flag=True, envvar="FRAUDRT_PG_FAST",
              help="Postgres without fsync (throwaway test clusters).")
@pass_state
def up_cmd(state: CliState, fast_pg: bool) -> None:
    """Start the embedded servers (reuses running ones)."""
    try:
        run_async(lambda: up(state.settings, fast_pg=fast_pg, progress=click.echo))
    except SubstrateError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("substrate up")


@substrate.command("down")
@click.option("--purge", is_flag=True, help="Also delete all substrate data.")
@pass_state
def down_cmd(state: CliState, purge: bool) -> None:
    """Stop the embedded servers by PID."""
    down(state.settings, purge=purge, progress=click.echo)


@substrate.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def status_cmd(state: CliState, as_json: bool) -> None:
    """Each service with its endpoint and liveness; exit 1 unless all are running."""
    report = run_async(lambda: status(state.settings))
    if as_json:
        echo_json(report)
    else:
        for name, svc in report["services"].items():
            click.echo(f"{name:9} {svc['state']:9} {svc.get('endpoint', '-'):32} pid={svc.get('pid', '-')}")
    raise SystemExit(0 if report["healthy"] else 1)


@substrate.command("bootstrap")
@click.option("--shards", type=int, default=None, help="Shards per stream (default: profile's shard_count).")
@pass_state
def bootstrap_cmd(state: CliState, shards: int | None) -> None:
    """Create buckets and every seed stream (idempotent), wait until ACTIVE."""
    try:
        result = run_async(lambda: bootstrap(state.settings, shards=shards, progress=click.echo))
    except SubstrateError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"bootstrap ok: created {result['created']}")
