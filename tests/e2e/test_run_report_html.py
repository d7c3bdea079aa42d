"""The run report's HTML page in a real headless Chromium (Debian's `chromium`, installed by
`make setup`): it loads from a file with the network off, draws its four plots, and a screenshot is
kept in the test's artifacts."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.obs_gov._html import render
from tests.support.obs_report import report

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make setup` installs Debian's package (apt-get install chromium)")
    # --no-sandbox: CI runs as root, where Chromium refuses its sandbox. The proxy flags make any
    # network fetch fail, so a page that needed one would show it.
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp / 'profile'}", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
            "--no-first-run", "--hide-scrollbars"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)


def test_the_report_page_renders_in_headless_chromium_with_its_plots(tmp_path: Path) -> None:
    page = tmp_path / "platform_run_report.html"
    page.write_text(render(report()))
    dom = _chromium("--dump-dom", page.as_uri(), tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") >= 7, "throughput, 4 latency histograms, decision mix, confusion matrix"
    for text in ("Throughput over time", "Confusion matrix", "decision mix", "Decision quality"):
        assert text in dom.stdout, text

    shot = tmp_path / "platform_run_report.png"
    result = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri(), tmp=tmp_path)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2400)
    assert len(data) > 20_000, "a page with plots, not a blank one"
    print(f"\nrun report screenshot: {shot}")
