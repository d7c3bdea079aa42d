"""Schemathesis against IG's own OpenAPI document (`GET /v1/openapi.json`), bounded to fit CI.

Every default check: no 5xx, every status and header the document lists, every response body
matching its schema, invalid input refused, positive input accepted, wrong methods answered 405
with Allow. Two unbounded minutes of it once found a 500 on `GET /v1/ops/lookup` (a NUL in
`receipt_id`) and a status the document did not list. The run is bounded by examples per
operation, not by time; the seed is fresh each run and printed when it fails.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from tests.support.ig import new_run_id, running_ig

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 100  # per operation and phase; under a minute on a loaded 2-core machine

# 413 (a body or batch over the limits: the document's maxItems) is a refusal too.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "404", "405", "413", "422"]
"""


async def test_schemathesis_finds_nothing_against_igs_openapi_document(private_streams: Settings,
                                                                      tmp_path: Path) -> None:
    async with running_ig(private_streams, new_run_id()) as ig:
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{ig.url}/v1/openapi.json",
            "--header", f"X-IG-Api-Key: {ig.key}", "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
            "--request-timeout", "30",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"})
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    # Long lines are the generated bodies (a curl per failure): the findings read better without them.
    report = "\n".join(line if len(line) < 400 else line[:400] + " ..." for line in
                       out.decode(errors="replace").splitlines())
    assert proc.returncode == 0, report[-12_000:]
