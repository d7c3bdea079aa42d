"""Schemathesis against the investigator API's own OpenAPI document, bounded to fit CI.

Every default check: no 5xx, every status and header the document lists, every answer matching its
schema, invalid input refused, wrong methods answered 405 with Allow. Bounded by examples per
operation, not by time; the seed is fresh each run and printed when it fails.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from tests.support.case_lane import held, plane_with_cases

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 60  # per operation and phase; about a minute on a loaded 2-core machine

# A case id that does not exist is a 404 even for data the schema calls valid (the document cannot
# list the run's case ids), and 409 is the workflow refusing a step, both answers the document lists.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "409", "413", "422"]

[checks.positive_data_acceptance]
expected-statuses = ["200", "404", "409"]
"""


async def test_schemathesis_finds_nothing_against_the_case_apis_document(substrate: Any, tmp_path: Path) -> None:
    async with held(plane_with_cases(substrate, tmp_path)) as plane:
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
            f"{plane.api_url}/v1/openapi.json", "--header", f"X-Case-Api-Key: {plane.api_key}",
            "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--request-timeout", "30",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"})
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=900)
        errors_5xx = plane.case_mgmt.api.errors_5xx if plane.case_mgmt.api else -1
    report = "\n".join(line if len(line) < 400 else line[:400] + " ..." for line in
                       out.decode(errors="replace").splitlines())
    assert proc.returncode == 0, report[-12_000:]
    assert errors_5xx == 0, report[-4000:]
