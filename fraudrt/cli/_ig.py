"""`fraudrt ig serve`: the Ingestion Gate on its own (outside a pack), e.g. `make platform-ig-service-parity`."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import anyio
import click

from ._common import CliState, pass_state

CONTROL_INGRESS_PACK = "local_parity_control_ingress_v0"


@click.group("ig")
def ig() -> None:
    """Ingestion Gate (HTTP admission onto the bus)."""


@ig.command("serve")
@click.option("--host", default=None, help="Bind address (default: ig.host of the profile).")
@click.option("--port", type=int, default=None, help="Port (default: ig.port; 0 = any free port).")
@click.option("--run-id", "run_id", default=None,
              help="platform_run_id for run-less evidence and logs (default: the active run).")
@click.option("--heal-lease-seconds", type=float, default=None,
              help="Age after which a PUBLISH_PENDING claim is re-published (default 60).")
@pass_state
def serve(state: CliState, host: str | None, port: int | None, run_id: str | None,
          heal_lease_seconds: float | None) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight pushes."""
    import asyncpg

    from fraudrt.contracts import HealthReport, MetricsReport, health_path, metrics_path, utc_now_ts, write_json_atomic
    from fraudrt.control_ingress.ingestion_gate import IngestionGate
    from fraudrt.runtime import ComponentContext
    from fraudrt.runtime.packs import RunError, active_run_id, apply_migrations, pack_run_dir

    settings = state.settings
    try:
        run = run_id or active_run_id(settings)
    except RunError as exc:
        raise click.ClickException(str(exc)) from exc
    if not settings.postgres.dsn:
        raise click.ClickException("no Postgres DSN configured (postgres.dsn / DATABASE_URL)")
    logs = pack_run_dir(settings, run, CONTROL_INGRESS_PACK) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    logger = logging.getLogger("fraudrt.ingestion_gate")
    logger.setLevel(logging.INFO)
    for handler in (logging.FileHandler(Path(logs) / "ig_service.log"), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    options: dict[str, object] = {}
    if host is not None:
        options["host"] = host
    if port is not None:
        options["port"] = port
    if heal_lease_seconds is not None:
        options["heal_lease_seconds"] = heal_lease_seconds

    async def main() -> None:
        pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=1, max_size=settings.postgres.pool_max)
        try:
            service = IngestionGate()
            async with pool.acquire() as conn:
                await apply_migrations(conn, "fraudrt.runtime", *service.sql_packages)
            ctx = ComponentContext(settings=settings, platform_run_id=run, pack_id="ig_serve", pool=pool,
                                   options=options, logger=logger)
            runs_root = Path(settings.runs_root)

            def write_reports() -> None:
                state_, reasons = service.health()
                now = utc_now_ts()
                write_json_atomic(health_path(runs_root, run, service.name), HealthReport(
                    component=service.name, platform_run_id=run, health_state=state_,  # type: ignore[arg-type]
                    reasons=reasons, generated_at_utc=now, details=service.health_details()))
                write_json_atomic(metrics_path(runs_root, run, service.name), MetricsReport(
                    component=service.name, platform_run_id=run, generated_at_utc=now,
                    counters={k: v for k, v in service.metrics().items() if isinstance(v, int | float)}))

            async with anyio.create_task_group() as tg:
                async def signals() -> None:
                    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                        async for _ in received:
                            logger.info("IG drain requested")
                            ctx.stopping.set()
                            return

                async def reports() -> None:
                    while not ctx.stopping.is_set():
                        write_reports()
                        with anyio.move_on_after(2.0):
                            await ctx.stopping.wait()

                tg.start_soon(signals)
                tg.start_soon(reports)
                await service.run(ctx)
                write_reports()
                tg.cancel_scope.cancel()
        finally:
            await pool.close()

    anyio.run(main)
