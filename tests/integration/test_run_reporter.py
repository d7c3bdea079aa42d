"""The run reporter on the real substrate: a sealed, stream-sorted world announced by SR (its truth),
decision-lane events on private streams (duplicates and another run's events among them), the
reporter actor folding them through a real reader and runner, and report rounds written to disk
and the object store. Checks: exact counts and quality against the world's truth, increments
without rescans, the one-shot read from the bus agrees, governance events, no secret in the
artifacts, and components without evidence reported as MISSING."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.control_ingress.scenario_runner import sr_ready
from fraudrt.obs_gov import governance, one_shot_report
from fraudrt.obs_gov._gather import Gatherer
from fraudrt.obs_gov._state import load_counts
from fraudrt.obs_gov.platform_run_reporter import PlatformRunReporter
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations
from fraudrt.substrate import s3_client
from tests.integration.test_sr_ready import oracle_world, ready_request
from tests.support.decision_lane import at, case_trigger, chain
from tests.support.harness import LocalActor, create_streams, make_scope, mint_run_id, open_pool, put, wait_for

pytestmark = pytest.mark.integration

TRAFFIC = "s3_event_stream_with_fraud_6B"


def _action(row: dict[str, Any], i: int) -> str:
    # A decision rule the test can score by hand: every other fraud flow declined, 1 in 5 legit reviewed.
    if row["fraud_flag"]:
        return "DECLINE" if i % 2 == 0 else "APPROVE"
    return "REVIEW" if i % 5 == 0 else "APPROVE"


async def test_the_reporter_folds_the_decision_lane_once_and_scores_it_against_the_truth(
        substrate: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    settings, run = scope.settings, scope.run_id
    rtdl, audit, case, _control = await create_streams(settings, ["rtdl", "audit", "case", "control"])
    world = await oracle_world(settings, tmp_path / "w", n_flows=120)
    await sr_ready(settings, ready_request(run, world, f"obs_{uuid.uuid4().hex[:8]}"))
    requests = [r for r in world.rows[TRAFFIC] if r["event_type"] == "AUTH_REQUEST"]
    assert any(r["fraud_flag"] for r in requests), "the world has fraud to score"
    pins = {"platform_run_id": run, "scenario_run_id": "e" * 32, "manifest_fingerprint": world.manifest_fingerprint,
            "parameter_hash": world.parameter_hash, "seed": world.seed, "scenario_id": world.scenario_id}
    chains = [chain(pins, f"t-{r['flow_id']}", r["flow_id"], _action(r, i), admitted=at(i // 20, i))
              for i, r in enumerate(requests)]
    first = chains[:40]
    other = chain({**pins, "platform_run_id": mint_run_id()}, "t-other", 1, "DECLINE", admitted=at(0))

    async with open_pool(settings) as pool:
        async with pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.obs_gov")
        async with KinesisBus(settings.kinesis) as bus:
            await put(bus, rtdl, [x for c in first for x in (c.decision, c.intent, c.outcome)] + [other.decision])
            await put(bus, audit, [c.audit for c in first])
            await put(bus, case, [case_trigger(pins, first[0].decision_id, at(1))])
            reporter = PlatformRunReporter()
            async with LocalActor(settings, reporter, run, pool, bus) as lp:
                await wait_for(lambda: _counts(pool, run), lambda c: c.get("audits") == 40 and c.get("outcomes") == 40
                               and c.get("case_triggers") == 1, timeout=60, what="the first 40 chains folded")
                gatherer = Gatherer(settings, run, pool)
                async with s3_client(settings.s3) as s3:
                    truth = await gatherer.load_truth(s3)
                assert truth is not None and truth.traffic_output_id == TRAFFIC
                reporter.gatherer = gatherer  # the background task's gatherer, shared as in a pack
                counts, unscored = await _load(pool, run)
                # Folded before the truth was known: kept, not lost.
                assert unscored == 40 and not any(k.startswith("q.") for k in counts)
                from fraudrt.obs_gov._state import score_pending

                assert await score_pending(pool, run, truth.label) == 40
                report1 = await gatherer.round(*await _load(pool, run))
                assert report1["rtdl"]["decisions"] == 40 and report1["quality"]["scored_decisions"] == 40

                # More of the run, and every earlier event a second time: only the new ones count.
                await put(bus, rtdl, [x for c in chains for x in (c.decision, c.intent, c.outcome)])
                await put(bus, audit, [c.audit for c in chains])
                await wait_for(lambda: _counts(pool, run), lambda c: c.get("audits") == len(chains)
                               and c.get("outcomes") == len(chains), timeout=90, what="every chain folded")
                await wait_for(lambda: _duplicates(lp), lambda n: n >= 40 * 4, timeout=60,
                               what="the 160 re-sent events read and dropped")
                report = await gatherer.round(*await _load(pool, run))
            assert lp.runner.stats.dead_lettered == 0

    r = report["rtdl"]
    assert (r["decisions"], r["intents"], r["outcomes"], r["audits"], r["case_triggers"]) == (
        len(chains), len(chains), len(chains), len(chains), 1)
    # Quality, by hand from the world's truth and the rule above.
    fraud = [(i, row) for i, row in enumerate(requests) if row["fraud_flag"]]
    legit = [(i, row) for i, row in enumerate(requests) if not row["fraud_flag"]]
    tp = sum(1 for i, _ in fraud if i % 2 == 0)
    fp = sum(1 for i, _ in legit if i % 5 == 0)
    flagged = report["quality"]["flagged"]
    assert (flagged["true_positives"], flagged["false_positives"]) == (tp, fp)
    assert flagged["recall"] == pytest.approx(tp / len(fraud), abs=1e-6)
    assert flagged["false_positive_rate"] == pytest.approx(fp / len(legit), abs=1e-6)
    assert report["quality"]["unscored_decisions"] == 0
    assert report["latency_ms"]["admit_to_decision"]["observed"]["count"] == len(chains)
    assert report["throughput"]["per_second"]["decided"] and sum(report["throughput"]["per_second"]["decided"]) == len(
        chains)
    # No WSP or IG here: the run is not complete, and the report says why instead of failing.
    assert not report["run_completed"]["run_completed"]
    assert "WSP has produced no evidence for this run" in report["run_completed"]["reasons"]
    assert report["components"]["decision_fabric"]["health_state"] == "MISSING"

    refs = report["evidence_refs"]["report"]
    json_text = await anyio.Path(refs["json"]).read_text()
    assert json.loads(json_text)["rtdl"]["decisions"] == len(chains)
    artifacts = json_text + await anyio.Path(refs["html"]).read_text()
    assert settings.postgres.dsn and settings.s3.secret_access_key
    password = settings.postgres.dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert password not in artifacts and settings.s3.secret_access_key not in artifacts
    assert "://fraudrt:" not in artifacts

    # The one-shot report, reading the bus itself, agrees with the actor's counters.
    async with open_pool(settings) as pool:
        shot, _paths = await one_shot_report(settings, run, from_bus=True, pool=pool)
    for key in ("decisions", "intents", "outcomes", "audits", "case_triggers", "decision_mix"):
        assert shot["rtdl"][key] == report["rtdl"][key], key
    assert shot["quality"]["confusion"] == report["quality"]["confusion"]

    families = [e.event_family for e in await governance.query(settings, run)]
    assert families.count("RUN_STARTED") == 1 and families.count("RUN_READY_SEEN") == 1
    assert families.count("RUN_REPORT_GENERATED") == 1 and "RUN_COMPLETED" not in families


async def _load(pool: Any, run: str) -> tuple[dict[str, int], int]:
    async with pool.acquire() as conn:
        return await load_counts(conn, run)


async def _counts(pool: Any, run: str) -> dict[str, int]:
    return (await _load(pool, run))[0]


async def _duplicates(lp: Any) -> int:
    return int(lp.runner.stats.duplicates)
