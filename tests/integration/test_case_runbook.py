"""The runbook's curl examples for the investigator API (docs/runbook.md, step 10) run as they stand
against a live case plane, and do what the runbook says they do."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from fraudrt.config import project_root
from fraudrt.runtime.bus import KinesisBus
from fraudrt.substrate import bootstrap

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.case_labels.case_mgmt import case_api_key
from tests.support.case_lane import decision, run_pins, running_plane
from tests.support.harness import mint_run_id, new_prefix, open_pool, put, wait_for

pytestmark = pytest.mark.integration

BLOCK = re.compile(r"<!-- case-api-curl:begin -->\n```sh\n(?P<script>.*?)```\n<!-- case-api-curl:end -->", re.S)


async def test_the_runbooks_curl_examples_work(substrate: Any, tmp_path: Path) -> None:
    script = BLOCK.search((project_root() / "docs" / "runbook.md").read_text())
    assert script is not None, "the runbook's marked curl block"
    runs = tmp_path / "runs"
    settings = substrate.settings_for(FRAUDRT_STREAM_PREFIX=new_prefix(), FRAUDRT_RUNS_ROOT=str(runs),
                                      CASE_API_PORT="0")
    await bootstrap(settings)
    run = mint_run_id()
    (runs / "fraud-platform").mkdir(parents=True)
    (runs / "fraud-platform" / "ACTIVE_RUN_ID").write_text(run + "\n")  # as `fraudrt run new` leaves it
    pins = run_pins(run)
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        await put(bus, settings.streams.name("rtdl"), [decision(pins, 1, action="DECLINE", score=0.93).envelope])
        async with running_plane(settings, run, pool, bus, api=True, api_key=case_api_key(settings)) as plane:

            async def created() -> int:
                return int(plane.case_mgmt.metrics().get("cases_created", 0))

            await wait_for(created, lambda n: n == 1, what="the case")
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", script.group("script"), cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env={**os.environ, "FRAUDRT_RUNS_ROOT": str(runs)})
            out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
            case = await pool.fetchrow("SELECT state, assignee, resolution FROM cm_cases WHERE platform_run_id = $1",
                                       run)
    lines = out.decode().splitlines()
    assert proc.returncode == 0, (out.decode(), err.decode())
    assert lines[0] == "fraudrt investigator API (case management)" and lines[1] == "401"
    assert '"actions":["DECLINE"]' in lines[2]
    assert lines.count("IN_REVIEW") == 1 and "true" in lines and lines.count("RESOLVED") == 1
    assert lines[-1] == "NOT_FOUND"  # nothing was known at the world's start
    assert dict(case) == {"state": "RESOLVED", "assignee": "alice", "resolution": "FRAUD_CONFIRMED"}
