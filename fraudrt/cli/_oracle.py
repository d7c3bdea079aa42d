"""`fraudrt oracle sync|pack|check|stream-sort|job-status`: the oracle store plane (seed step 4)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import msgspec

from fraudrt.oracle import (
    CheckRequest,
    JobStatus,
    OracleError,
    PackRequest,
    StreamSortRequest,
    SyncProgress,
    SyncRequest,
    check_engine_root,
    job_status,
    pack_engine_root,
    report_to_dict,
    submit_stream_sort,
    sync_engine_root,
    wait_for_job,
)

from ._common import CliState, echo_json, pass_state, run_async

_MODES = click.Choice(["fraud", "baseline", "all"])


def _engine_root_option(f: Any) -> Any:
    return click.option(
        "--engine-run-root",
        envvar="ORACLE_ENGINE_RUN_ROOT",
        required=True,
        help="s3://oracle-store/<root>, a bare <root> (in the oracle bucket), or a local directory.",
    )(f)


def _scenario_option(f: Any) -> Any:
    return click.option("--scenario-id", envvar="ORACLE_SCENARIO_ID", required=True, help="e.g. baseline_v1")(f)


def _oracle_error(exc: OracleError) -> click.ClickException:
    return click.ClickException(f"{exc.code}: {exc.message}")


@click.group()
def oracle() -> None:
    """Oracle store: sync an engine world, seal it, check it, build its stream views."""


@oracle.command("sync")
@click.option(
    "--source",
    envvar="ORACLE_SYNC_SOURCE",
    required=True,
    type=click.Path(file_okay=False),
    help="Local engine run root.",
)
@_engine_root_option
@click.option("--concurrency", type=int, default=8, show_default=True, help="Requests in flight.")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def sync_cmd(state: CliState, source: str, engine_run_root: str, concurrency: int, as_json: bool) -> None:
    """Copy a local engine run root into the store (skips objects already there with the same sha256)."""
    last = [0.0]

    def show(p: SyncProgress) -> None:
        now = time.monotonic()
        if now - last[0] >= 1.0 or p.files_done == p.files_total:
            last[0] = now
            click.echo(
                f"sync {p.files_done}/{p.files_total} files, {p.bytes_done / 2**20:.1f}/{p.bytes_total / 2**20:.1f} MiB"
                f" (uploaded {p.files_uploaded}, unchanged {p.files_skipped})",
                err=True,
            )

    request = SyncRequest(source=source, engine_run_root=engine_run_root, concurrency=concurrency)
    try:
        result = run_async(sync_engine_root, state.settings, request, show)
    except OracleError as exc:
        raise _oracle_error(exc) from exc
    if as_json:
        echo_json(msgspec.to_builtins(result))
    else:
        click.echo(
            f"synced {result.files} files ({result.uploaded} uploaded, {result.skipped} unchanged,"
            f" {result.verified} verified) to {result.engine_run_root}"
        )


@oracle.command("pack")
@_engine_root_option
@_scenario_option
@click.option("--engine-release", envvar="ORACLE_ENGINE_RELEASE", default="unknown", show_default=True)
@click.option(
    "--seal-status", type=click.Choice(["SEALED_OK", "SEALED_FAILED"]), default="SEALED_OK", show_default=True
)
@pass_state
def pack_cmd(state: CliState, engine_run_root: str, scenario_id: str, engine_release: str, seal_status: str) -> None:
    """Write the pack manifest and _SEALED.json, each write-once (a repeat of the same pack is a no-op)."""
    request = PackRequest(
        engine_run_root=engine_run_root,
        scenario_id=scenario_id,
        engine_release=engine_release,
        seal_status=seal_status,  # type: ignore[arg-type]
    )
    try:
        result = run_async(pack_engine_root, state.settings, request)
    except OracleError as exc:
        raise _oracle_error(exc) from exc
    echo_json({"pack_root": result.engine_run_root, **msgspec.to_builtins(result)})


@oracle.command("check")
@_engine_root_option
@_scenario_option
@click.option("--strict", is_flag=True, help="A missing pack manifest or seal is an error, not a warning.")
@click.option("--mode", type=_MODES, default="all", show_default=True, help="Which outputs to check.")
@click.option("--output-id", "output_ids", multiple=True, help="Check only these outputs (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def check_cmd(
    state: CliState,
    engine_run_root: str,
    scenario_id: str,
    strict: bool,
    mode: str,
    output_ids: tuple[str, ...],
    as_json: bool,
) -> None:
    """Verify seal, gates, outputs, columns and path partition values; list every problem; exit 1 on any error."""
    request = CheckRequest(
        engine_run_root=engine_run_root,
        scenario_id=scenario_id,
        strict=strict,
        mode=mode,  # type: ignore[arg-type]
        output_ids=output_ids,
    )
    try:
        report = run_async(check_engine_root, state.settings, request)
    except OracleError as exc:
        raise _oracle_error(exc) from exc
    if as_json:
        echo_json(report_to_dict(report))
    else:
        for issue in report.issues:
            click.echo(
                f"{issue.severity:5} {issue.code:30} {issue.detail}" + (f" [{issue.path}]" if issue.path else "")
            )
        click.echo(
            f"{report.status}: {len(report.errors)} errors, {len(report.issues) - len(report.errors)} warnings;"
            f" {len(report.gates_checked)} gates, {len(report.outputs_checked)} outputs, {report.files_checked} files"
        )
    raise SystemExit(1 if report.status == "FAIL" else 0)


def _progress_line(status: JobStatus) -> str:
    p = status.progress
    if not p:
        return f"job {status.job_id}: {status.state}"
    done, total = p.get("rows_done", 0), p.get("rows_total", 0)
    pct = f" {100.0 * done / total:5.1f}%" if total else ""
    outputs = f"[{p.get('outputs_done', 0)}/{p.get('outputs_total', '?')}]"
    return f"job {status.job_id}: {status.state} {outputs} {p.get('output_id', '')} {p.get('phase', '')}{pct}"


def _finish(status: JobStatus, as_json: bool) -> None:
    if as_json:
        echo_json(msgspec.to_builtins(status))
    else:
        for out in status.outputs:
            click.echo(
                f"{out['output_id']:32} {out['status']:8} rows={out['rows']} parts={out['parts']}"
                f"{' (rebuilt a partial view)' if out.get('rebuilt_partial') else ''} -> {out['stream_view_root']}"
            )
        if status.state == "FAILED":
            click.echo(f"job {status.job_id} FAILED: {status.error_code}: {status.error_message}", err=True)
            click.echo(f"log: {status.log_path}", err=True)
    raise SystemExit(0 if status.state == "SUCCEEDED" else 1)


def _watch(state: CliState, job_id: str, as_json: bool, timeout: float | None) -> None:
    def show(status: JobStatus) -> None:
        if not as_json:
            click.echo(_progress_line(status), err=True)

    try:
        status = wait_for_job(state.settings, job_id, show, timeout=timeout)
    except OracleError as exc:
        raise _oracle_error(exc) from exc
    _finish(status, as_json)


@oracle.command("stream-sort")
@_engine_root_option
@_scenario_option
@click.option("--mode", type=_MODES, default="fraud", show_default=True, help="Traffic + context outputs of this mode.")
@click.option(
    "--output-id",
    "output_ids",
    multiple=True,
    envvar="ORACLE_STREAM_OUTPUT_ID",
    help="Sort only these outputs (repeatable).",
)
@click.option(
    "--stream-view-root",
    envvar="ORACLE_STREAM_VIEW_ROOT",
    default=None,
    help="Default <engine root>/stream_view/ts_utc.",
)
@click.option(
    "--memory-mb",
    type=click.IntRange(min=64),
    envvar="STREAM_SORT_MEMORY_MB",
    default=2048,
    show_default=True,
    help="Peak memory of the sort job's process, MiB (outputs that do not fit spill to disk); it holds "
         "from 384 up, the process itself needs ~190 MiB.",
)
@click.option("--rows-per-part", type=click.IntRange(min=1000), default=1_000_000, show_default=True)
@click.option("--work-dir", envvar="STREAM_SORT_TEMP_DIR", default=None, help="Local scratch (default: system temp).")
@click.option("--detach", is_flag=True, help="Return at once with the job id; see `oracle job-status`.")
@click.option("--timeout", type=float, default=None, help="Stop waiting after this many seconds (the job goes on).")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def stream_sort_cmd(
    state: CliState,
    engine_run_root: str,
    scenario_id: str,
    mode: str,
    output_ids: tuple[str, ...],
    stream_view_root: str | None,
    memory_mb: int,
    rows_per_part: int,
    work_dir: str | None,
    detach: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Build per-output stream views ordered by ts_utc, as a separate job process."""
    request = StreamSortRequest(
        engine_run_root=engine_run_root,
        scenario_id=scenario_id,
        mode=mode,  # type: ignore[arg-type]
        output_ids=tuple(output_ids),
        stream_view_root=stream_view_root,
        memory_mb=memory_mb,
        rows_per_part=rows_per_part,
        work_dir=work_dir,
    )
    try:
        job_id = submit_stream_sort(state.settings, request)
    except OracleError as exc:
        raise _oracle_error(exc) from exc
    if detach:
        status = job_status(state.settings, job_id)
        if as_json:
            echo_json(msgspec.to_builtins(status))
        else:
            click.echo(job_id)
            click.echo(f"status: fraudrt oracle job-status {job_id}   log: {status.log_path}", err=True)
        return
    click.echo(f"job {job_id} submitted", err=True)
    _watch(state, job_id, as_json, timeout)


@oracle.command("job-status")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait until the job finishes, showing progress.")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def job_status_cmd(state: CliState, job_id: str, wait: bool, as_json: bool) -> None:
    """Show a job's state and progress (exit 0 running/succeeded, 1 failed)."""
    if wait:
        _watch(state, job_id, as_json, None)
        return
    try:
        status = job_status(state.settings, job_id)
    except OracleError as exc:
        raise _oracle_error(exc) from exc
    if as_json:
        echo_json(msgspec.to_builtins(status))
    else:
        click.echo(_progress_line(status))
        if status.state in ("SUCCEEDED", "FAILED"):
            _finish(status, False)
    sys.exit(1 if status.state == "FAILED" else 0)
