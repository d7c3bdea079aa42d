"""`fraudrt`: the one entry point (click)."""

from __future__ import annotations

import click

from ._common import CliState


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--profile", envvar="FRAUDRT_PROFILE", default=None, help="config/profiles/<name>.yaml")
@click.pass_context
def cli(ctx: click.Context, profile: str | None) -> None:
    """fraudrt: real-time fraud decision platform."""
    ctx.obj = CliState(profile)


def _register() -> None:
    # Each plane owns its command module; the list here is the CLI's table of contents.
    from ._control import sr, wsp
    from ._engine import engine
    from ._ig import ig
    from ._obs import conformance, governance, report
    from ._operate import pack, run_group
    from ._oracle import oracle
    from ._parity import parity
    from ._policy import policy
    from ._substrate import substrate

    cli.add_command(substrate)
    cli.add_command(run_group)
    cli.add_command(pack)
    cli.add_command(engine)
    cli.add_command(ig)
    cli.add_command(oracle)
    cli.add_command(parity)
    cli.add_command(policy)
    cli.add_command(sr)
    cli.add_command(wsp)
    cli.add_command(report)
    cli.add_command(conformance)
    cli.add_command(governance)


_register()


def main() -> None:
    cli()
