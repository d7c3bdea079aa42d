"""`fraudrt parity`: the Spine Green v0 closeout (seed step 11.1) on the current profile."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fraudrt.operate import ParityRequest, run_parity
from fraudrt.runtime.packs import run_dir

from ._common import CliState, pass_state


@click.command("parity")
@click.option("--events", "events_per_output", type=int, default=200, show_default=True,
              envvar="WSP_MAX_EVENTS_PER_OUTPUT", help="Events streamed per output (the bounded run).")
@click.option("--flows", type=int, default=2000, show_default=True, help="Flows in the generated world.")
@click.option("--keep-running", is_flag=True, help="Leave the packs up afterwards.")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def parity(state: CliState, events_per_output: int, flows: int, keep_running: bool, as_json: bool) -> None:
    """Run the seed's steps 0-12 and check every pass condition; exit 1 unless all hold."""
    req = ParityRequest(events_per_output=events_per_output, flows=flows, keep_running=keep_running)
    report = run_parity(req, progress=(lambda _m: None) if as_json else click.echo)
    if report.platform_run_id:
        out = run_dir(state.settings, report.platform_run_id) / "obs" / "parity_closeout.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report.to_dict(), indent=2))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo("")
        width = max((len(s.step) for s in report.steps), default=10)
        click.echo(f"{'status':8} {'step':{width}} {'seconds':>7}  evidence / detail")
        for s in report.steps:
            click.echo(f"{s.status:8} {s.step:{width}} {s.seconds:7.1f}  {s.evidence or '-'}")
            if s.status != "PASS":
                click.echo(f"{'':8} {'':{width}} {'':7}  -> {s.detail}")
        missing = [s.step for s in report.steps if s.status != "PASS"]
        click.echo(f"\nSpine Green v0 closeout: {'PASS' if report.passed else 'NOT PASSED'}"
                   + (f" ({len(missing)} step(s) not passing)" if missing else "")
                   + f" in {report.seconds:.0f} s")
    raise SystemExit(0 if report.passed else 1)
