"""Dependency outages longer than any client's retry budget, under a running pack (issue 10.1):
S3, Postgres and Kinesis each go away for 30 s while 20,000 records wait to be archived and recorded.
Nothing is dead-lettered, the archive is complete, every record is recorded once, and while the
dependency is down the components say so in their health."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import pack_status, pack_up
from fraudrt.substrate import bootstrap
from tests.support.harness import handled, kill_pack, make_scope, open_pool, outage, put, record, wait_for

pytestmark = pytest.mark.chaos

RECORDS = 20_000
OUTAGE_SECONDS = 30.0


async def _archived(pool: Any, run: str) -> int:
    return int(await pool.fetchval("SELECT coalesce(sum(record_count), 0) FROM archive_segments "
                                   "WHERE platform_run_id = $1", run))


async def _dead(pool: Any, prefix: str) -> list[Any]:
    return list(await pool.fetch("SELECT actor, reason FROM rt_dead_letters WHERE stream LIKE $1", prefix + "%"))


@pytest.mark.parametrize("service", ["s3", "postgres", "kinesis"])
async def test_an_outage_longer_than_the_retry_budget_loses_and_dead_letters_nothing(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", scope.env["FRAUDRT_PACKS_DIR"])
    settings, run = scope.settings, scope.run_id
    await bootstrap(settings)
    traffic = settings.streams.name("traffic_fraud")
    half = RECORDS // 2
    try:
        await anyio.to_thread.run_sync(lambda: pack_up(settings, "test_archive", platform_run_id=run, env=scope.env))
        if service == "kinesis":
            # Kinesis itself goes: the readers lose it mid-stream.
            async with KinesisBus(settings.kinesis) as bus:
                await put(bus, traffic, [record(run, n=i) for i in range(half)])
            async with open_pool(substrate.settings) as pool:
                await wait_for(lambda: _archived(pool, run), lambda n: n > 0, timeout=60, what="archiving")
        async with outage(substrate.settings, service):
            if service != "kinesis":
                # The records arrive while the object store or the database is gone.
                async with KinesisBus(settings.kinesis) as bus:
                    await put(bus, traffic, [record(run, n=i) for i in range(RECORDS)])
            seen_down = False
            deadline = anyio.current_time() + OUTAGE_SECONDS
            while anyio.current_time() < deadline:
                report = pack_status(settings, "test_archive")
                states = {c: v["health_state"] for c, v in report["components"].items()}
                seen_down = seen_down or any(s != "GREEN" for s in states.values())
                await anyio.sleep(1.0)
            assert seen_down, "a component said the dependency was down"
        if service == "kinesis":
            async with KinesisBus(settings.kinesis) as bus:
                await put(bus, traffic, [record(run, n=half + i) for i in range(half)])
        async with open_pool(substrate.settings) as pool:
            await wait_for(lambda: _archived(pool, run), lambda n: n >= RECORDS, timeout=180,
                           what="the archive complete after the outage")
            rows = await wait_for(lambda: handled(pool, run), lambda r: len(r) >= RECORDS, timeout=180,
                                  what="every record recorded")
            assert await _dead(pool, scope.prefix) == [], "an outage is never a poison record"
            assert await _archived(pool, run) == RECORDS, "each record archived once"
            assert len({r["sequence_number"] for r in rows}) == len(rows) == RECORDS
        report = await wait_for(lambda: _async(pack_status(settings, "test_archive")),
                                lambda r: all(c["health_state"] == "GREEN" for c in r["components"].values()),
                                timeout=60, what="GREEN again")
        assert report["state"] == "running"
    finally:
        kill_pack(settings, "test_archive_v0")


async def _async(value: Any) -> Any:
    return value
