"""A CLI command whose substrate cannot be reached says so in one line: no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fraudrt._daemon import free_port

pytestmark = pytest.mark.unit


def test_sr_ready_against_unreachable_substrate_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    dead = free_port()
    env = dict(os.environ, FRAUDRT_HOME=str(tmp_path), FRAUDRT_RUNS_ROOT=str(tmp_path),
               PLATFORM_RUN_ID="platform_20260101T000000Z", S3_ENDPOINT_URL=f"http://127.0.0.1:{dead}",
               KINESIS_ENDPOINT_URL=f"http://127.0.0.1:{dead}",
               DATABASE_URL=f"postgresql://u:p@127.0.0.1:{dead}/db",
               FRAUDRT__S3__ACCESS_KEY_ID="k", FRAUDRT__S3__SECRET_ACCESS_KEY="s",
               FRAUDRT__KINESIS__ACCESS_KEY_ID="k", FRAUDRT__KINESIS__SECRET_ACCESS_KEY="s",
               AWS_MAX_ATTEMPTS="1")
    proc = subprocess.run([sys.executable, "-m", "fraudrt", "sr", "ready", "--run-equivalence-key", "k",
                           "--engine-run-root", "s3://oracle-store/x/y"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "dependency is unavailable" in proc.stderr
