"""The Action Layer and the Decision Log/Audit as real pack processes on the embedded substrate.

1. Decisions and intents on the rtdl stream -> AL executes them and publishes outcomes through the
   pack's relay -> DLA joins all three and publishes audit records: the health files say what the
   closeout reads (AL GREEN with intake == outcome > 0, DLA GREEN with lineage_unresolved_total 0),
   the metrics files carry the hop latencies.
2. kill -9 of DLA between a segment PUT and its commit (its test-only crash point): after `pack up`
   the same segment key is rewritten byte for byte and the index names every line of it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import audit_chain_id, decode_envelope, health_path, metrics_path
from fraudrt.rtdl.decision_log_audit import CRASH_AFTER_SEGMENT_PUTS_ENV
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations, pack_down, pack_up
from fraudrt.substrate import s3_client
from tests.support.harness import (
    create_streams,
    kill_pack,
    make_scope,
    open_pool,
    put,
    read_all,
    wait_for,
    wait_for_exit,
)
from tests.support.lane_events import chain, outcome

pytestmark = pytest.mark.e2e


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc


async def test_intents_become_outcomes_and_audited_chains_with_the_health_the_closeout_reads(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", scope.env["FRAUDRT_PACKS_DIR"])
    settings, run = scope.settings, scope.run_id
    rtdl, audit = await create_streams(settings, ["rtdl", "audit"])
    actions = ("APPROVE", "STEP_UP", "REVIEW", "DECLINE")
    chains = [chain(run, i, action=actions[i % 4]) for i in range(200)]
    runs = Path(settings.runs_root)
    async with KinesisBus(settings.kinesis) as bus:
        # Half before the pack starts (read from TRIM_HORIZON), half while it runs.
        await put(bus, rtdl, [d for c in chains[:100] for d in (c.decision, c.intent)])
        try:
            await anyio.to_thread.run_sync(lambda: pack_up(settings, "test_decision_lane", platform_run_id=run,
                                                           env=scope.env))
            await put(bus, rtdl, [d for c in chains[100:] for d in (c.decision, c.intent)])

            async def files() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
                return (_read_json(health_path(runs, run, "action_layer")),
                        _read_json(health_path(runs, run, "decision_log_audit")))

            def closed(h: tuple[dict[str, Any] | None, dict[str, Any] | None]) -> bool:
                al, dla = h
                return (al is not None and dla is not None and al["details"]["outcome_total"] == 200
                        and dla["details"]["chains_resolved_total"] == 200)

            al, dla = await wait_for(files, closed, timeout=120, interval=0.5, what="200 outcomes and 200 chains")
            stopped = await anyio.to_thread.run_sync(lambda: pack_down(settings, "test_decision_lane", timeout=30))
            assert stopped["state"] == "stopped"
        finally:
            kill_pack(settings, "test_decision_lane_v0")
        published = await read_all(bus, audit)

    # What the closeout's step 11.1 reads, from the files the drained pack wrote last.
    al, dla = await files()
    assert al is not None and dla is not None
    assert al["health_state"] == "GREEN", al["reasons"]
    assert al["details"]["intake_total"] == al["details"]["outcome_total"] == 200
    assert dla["health_state"] == "GREEN", dla["reasons"]
    assert dla["details"]["lineage_unresolved_total"] == 0
    al_metrics = json.loads(metrics_path(runs, run, "action_layer").read_text())
    dla_metrics = json.loads(metrics_path(runs, run, "decision_log_audit").read_text())
    assert al_metrics["gauges"]["latency_ms.decision_to_outcome.count"] == 200
    assert al_metrics["gauges"]["latency_ms.decision_to_outcome.p99"] > 0
    assert dla_metrics["gauges"]["latency_ms.admit_to_audit.count"] == 200
    assert dla_metrics["counters"]["records.action_outcome"] == 200
    recon = json.loads((runs / "fraud-platform" / run / "decision_log_audit" / "reconciliation" /
                        "last_reconciliation.json").read_text())
    assert recon["chains"]["resolved"] == 200 and recon["lineage_unresolved_total"] == 0
    assert sum(recon["outcomes_by_status"].values()) == 200
    # One audit record per chain on the audit stream, each the chain's id.
    ids = sorted(decode_envelope(r.data).event_id for r in published)
    assert ids == sorted(audit_chain_id(run, c.decision_id) for c in chains)


async def test_a_segment_written_before_a_crash_is_rewritten_byte_for_byte_and_indexed_after_restart(
        substrate: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = make_scope(substrate, tmp_path / "runs", test_packs=True)
    monkeypatch.setenv("FRAUDRT_PACKS_DIR", scope.env["FRAUDRT_PACKS_DIR"])
    settings, run = scope.settings, scope.run_id
    (rtdl,) = await create_streams(settings, ["rtdl"])
    chains = [chain(run, i) for i in range(60)]
    bucket = settings.buckets.platform
    prefix = f"{run}/decision_log_audit/segments/"

    async def objects() -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        async with s3_client(settings.s3) as s3:
            listing = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
            for obj in listing.get("Contents", []):
                out[obj["Key"]] = await (await s3.get_object(Bucket=bucket, Key=obj["Key"]))["Body"].read()
        return out

    async with KinesisBus(settings.kinesis) as bus, open_pool(settings) as pool:
        async with pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.rtdl.decision_log_audit")
        # Everything is on the bus before DLA starts, so its first batch is the same after the restart.
        await put(bus, rtdl, [d for c in chains for d in (c.decision, c.intent, outcome(c))])
        try:
            await anyio.to_thread.run_sync(lambda: pack_up(
                settings, "test_dla", platform_run_id=run, env={**scope.env, CRASH_AFTER_SEGMENT_PUTS_ENV: "1"}))
            await wait_for_exit("test_dla_v0", settings, what="the self-kill after the first segment PUT")
            orphans = await objects()
            assert len(orphans) == 1, "the segment was written"
            assert await pool.fetchval("SELECT count(*) FROM dla_links WHERE platform_run_id = $1", run) == 0, \
                "its batch never committed"
            await anyio.to_thread.run_sync(lambda: pack_up(settings, "test_dla", platform_run_id=run, env=scope.env))

            async def resolved() -> int:
                return int(await pool.fetchval("SELECT count(*) FROM dla_chains WHERE platform_run_id = $1 "
                                                "AND status = 'RESOLVED'", run))

            await wait_for(resolved, lambda n: n == len(chains), timeout=90, what="every chain resolved")
            await anyio.to_thread.run_sync(lambda: pack_down(settings, "test_dla", timeout=30))
        finally:
            kill_pack(settings, "test_dla_v0")
        after = await objects()
        refs = [r["segment_ref"] for r in await pool.fetch(
            "SELECT segment_ref FROM dla_links WHERE platform_run_id = $1", run)]

    ((key, body),) = orphans.items()
    assert after[key] == body, "the re-run wrote the same key with the same bytes"
    assert set(after) == {key}, "no second object for the same records"
    lines = after[key].splitlines()
    assert sorted(refs) == sorted(f"s3://{bucket}/{key}#L{i}" for i in range(1, len(lines) + 1))
    assert len(lines) == 3 * len(chains)
