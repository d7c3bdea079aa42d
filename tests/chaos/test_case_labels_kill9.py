"""kill -9 of a real case_labels pack between case creation and label emission, and right after an
investigator's label committed but before the API answered: after `pack up`, nothing is lost and
nothing is doubled (every case once, every label once in the Label Store), and the pack is GREEN.

Both kills are the pack's own test-only crash points (SIGKILL in the process): case_mgmt's, right
after the batch that created its Nth case committed (cases, timelines and AUTO label rows durable,
the labels still unpublished outbox rows), and the API's, right after a HUMAN label's transaction
committed (the person never got an answer).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support: imported here and by pack processes

from fraudrt._daemon import is_alive
from fraudrt.case_labels.case_mgmt import (
    CRASH_AFTER_CASES_ENV,
    CRASH_AFTER_LABEL_COMMIT_ENV,
    case_api_key,
    read_api_file,
)
from fraudrt.contracts import health_path, metrics_path
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import load_pack_state, pack_down, pack_up
from fraudrt.substrate import bootstrap
from tests.support.case_lane import decision, run_pins
from tests.support.harness import kill_pack, make_scope, open_pool, put, wait_for, wait_for_exit

pytestmark = pytest.mark.chaos

PACK = "local_parity_case_labels_v0"
CASES = 200


async def _count(pool: Any, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args))


async def _api(settings: Any, run: str, pid: int) -> str:
    """The URL of the API the process `pid` opened (the port is a free one each start)."""

    async def where() -> dict[str, Any] | None:
        try:
            return read_api_file(settings, run)
        except (OSError, ValueError):
            return None

    found = await wait_for(where, lambda w: w is not None and w["pid"] == pid, timeout=60, what="the API open")
    assert found is not None
    return str(found["url"])


async def test_kill9_between_case_creation_and_label_emission_loses_nothing(substrate: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    extra = {"CASE_API_PORT": "0", "CASE_API_KEYS_FILE": str(tmp_path / "case_api_keys")}
    settings = substrate.settings_for(FRAUDRT_STREAM_PREFIX=scope.prefix, FRAUDRT_RUNS_ROOT=str(tmp_path / "runs"),
                                      **extra)
    run = scope.run_id
    await bootstrap(settings)
    pins = run_pins(run)
    decided = [decision(pins, f, action="REVIEW", score=0.5, second=f / 100) for f in range(CASES)]

    def up(**env: str) -> dict[str, Any]:
        return pack_up(settings, "case_labels", platform_run_id=run, env={**scope.env, **extra, **env})

    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        try:
            # 1. The first process kills itself right after the batch that created its 50th case committed.
            first = await anyio.to_thread.run_sync(lambda: up(**{CRASH_AFTER_CASES_ENV: "50"}))
            await put(bus, settings.streams.name("rtdl"), [d.envelope for d in decided[:100]])
            await wait_for_exit(PACK, settings, what="case_mgmt's self-kill", timeout=120)
            cases_then = await _count(pool, "SELECT count(*) FROM cm_cases WHERE platform_run_id = $1", run)
            unpublished = await _count(pool, "SELECT count(*) FROM rt_outbox WHERE owner = $1 AND published_at IS NULL "
                                       "AND stream = $2", PACK, settings.streams.name("case"))
            labels_then = await _count(pool, "SELECT count(*) FROM ls_label_assertions WHERE platform_run_id = $1",
                                       run)
            # Decisions keep coming while nothing runs.
            await put(bus, settings.streams.name("rtdl"), [d.envelope for d in decided[100:]])

            # 2. The second process kills itself after an investigator's label committed, before answering.
            second = await anyio.to_thread.run_sync(lambda: up(**{CRASH_AFTER_LABEL_COMMIT_ENV: "1"}))
            url = await _api(settings, run, second["pid"])
            key = case_api_key(settings)
            await wait_for(lambda: _count(pool, "SELECT count(*) FROM cm_cases WHERE platform_run_id = $1", run),
                           lambda n: n == CASES, timeout=120, what="every case")
            case_id = await pool.fetchval("SELECT case_id FROM cm_cases WHERE platform_run_id = $1 ORDER BY case_id "
                                          "LIMIT 1", run)
            with pytest.raises(aiohttp.ClientError):
                async with aiohttp.ClientSession() as http, http.post(
                        f"{url}/v1/cases/{case_id}/labels", headers={"X-Case-Api-Key": key},
                        json={"actor": "alice", "label_type": "fraud_disposition", "label_value": "FRAUD_CONFIRMED",
                              "request_id": "after-crash"}) as resp:
                    await resp.read()
            await wait_for_exit(PACK, settings, what="the API's self-kill", timeout=60)

            # 3. A clean start: everything committed is published and applied, once.
            third = await anyio.to_thread.run_sync(up)
            assert len({first["pid"], second["pid"], third["pid"]}) == 3
            await wait_for(lambda: _count(pool, "SELECT count(*) FROM ls_label_assertions WHERE platform_run_id = $1",
                                          run), lambda n: n == CASES + 1, timeout=120,
                           what="200 AUTO labels and the investigator's")
            await anyio.sleep(3.0)  # a report round, and time for anything doubled to show up
            state = load_pack_state(settings, PACK)
            assert state is not None and is_alive(state.process)
            stopped = await anyio.to_thread.run_sync(lambda: pack_down(settings, "case_labels", timeout=60))
            assert stopped["state"] == "stopped"
            cases = await pool.fetch("SELECT case_id, last_seq, trigger_count FROM cm_cases "
                                     "WHERE platform_run_id = $1", run)
            timeline = await pool.fetch("SELECT case_id, seq, event_type FROM cm_timeline WHERE platform_run_id = $1",
                                        run)
            labels = await pool.fetch("SELECT source_type, event_id, case_id FROM ls_label_assertions "
                                      "WHERE platform_run_id = $1", run)
            triggers = await _count(pool, "SELECT count(*) FROM ct_triggers WHERE platform_run_id = $1", run)
        finally:
            kill_pack(settings, PACK)

    # The first kill landed in the window: cases committed, their labels not yet on the bus.
    assert cases_then >= 50 and unpublished > 0 and labels_then < cases_then, (cases_then, unpublished, labels_then)
    assert triggers == CASES and len(cases) == CASES
    assert all(c["trigger_count"] == 1 for c in cases)
    per_case: dict[str, list[str]] = {}
    for row in sorted(timeline, key=lambda r: (r["case_id"], r["seq"])):
        per_case.setdefault(row["case_id"], []).append(row["event_type"])
    human_case = next(c for c, events in per_case.items() if len(events) == 3)
    assert per_case.pop(human_case) == ["CASE_TRIGGERED", "LABEL_ASSERTED", "LABEL_ASSERTED"]
    assert all(events == ["CASE_TRIGGERED", "LABEL_ASSERTED"] for events in per_case.values())
    assert sorted(r["source_type"] for r in labels).count("AUTO") == CASES
    assert [r["case_id"] for r in labels if r["source_type"] == "HUMAN"] == [human_case]
    assert len({(r["source_type"], r["event_id"]) for r in labels}) == CASES + 1
    root = Path(settings.runs_root)
    for component in ("case_trigger", "case_mgmt", "label_store", "truth_chargeback_feed"):
        health = json.loads(health_path(root, run, component).read_text())
        assert health["health_state"] == "GREEN", (component, health["reasons"])
    metrics = {c: json.loads(metrics_path(root, run, c).read_text())["counters"]
               for c in ("case_trigger", "case_mgmt", "label_store")}
    assert metrics["case_trigger"]["triggers_seen"] == CASES and metrics["case_trigger"]["triggers_emitted"] == CASES
    assert metrics["case_mgmt"]["cases_created"] == CASES
    assert metrics["label_store"]["accepted"] == CASES + 1
