"""The investigator console in a real headless Chromium: without the key it shows nothing but the refusal;
with it, the case queue, a case's decision evidence and timeline, and a label a person enters reaches the
case's timeline and the Label Store. A screenshot is kept in the test's artifacts."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from tests.support.case_lane import api_call, plane_with_cases
from tests.support.chromium import chromium_page
from tests.support.harness import wait_for

pytestmark = pytest.mark.e2e


async def test_the_console_shows_the_queue_a_case_and_takes_a_label(substrate: Any, tmp_path: Path) -> None:
    async with plane_with_cases(substrate, tmp_path, flows=3) as plane, chromium_page(tmp_path) as page:
        await page.goto(f"{plane.api_url}/console")
        # No key yet: the API refuses, the page says so and shows no case.
        await page.js("document.getElementById('refresh').click()")
        await page.until("document.getElementById('msg').textContent.includes('401')", what="the 401 shown")
        assert await page.js("document.querySelectorAll('#queue tr').length") == 0

        await page.js(f"document.getElementById('key').value = {plane.api_key!r};"
                      "document.getElementById('keyform').requestSubmit()")
        await page.until("document.querySelectorAll('#queue tr.case').length === 3", what="the queue of 3 cases")
        # The case of the highest score (0.7, reason HIGH_SCORE): cases made in one transaction tie on
        # created_at, so the queue's order among them is by case id, which differs from run to run.
        _, top = await api_call(plane, "GET", "/v1/cases?min_score=0.65")
        (chosen,) = [c["case_id"] for c in top["cases"]]
        await page.js(f"document.querySelector('#queue tr.case[data-id=\"{chosen}\"]').click()")
        await page.until("document.querySelector('#detail h2') && "
                         "document.querySelector('#detail h2').textContent.startsWith('Case ')", what="a case")
        detail = await page.js("document.getElementById('detail').innerText")
        for text in ("Decision evidence", "REVIEW", "HIGH_SCORE", "party_amount_sum_1h", "CASE_TRIGGERED",
                     "LABEL_ASSERTED", "Labels known now"):
            assert text in detail, text
        case_id = (await page.js("document.querySelector('#detail h2').textContent")).removeprefix("Case ")
        assert case_id == chosen

        # A person signs, asserts a label, and the console reloads the case from the API.
        await page.js("document.getElementById('actor').value = 'alice';"
                      "document.getElementById('actor').dispatchEvent(new Event('change'));"
                      "document.getElementById('label_value').value = 'LEGIT_CONFIRMED';"
                      "document.getElementById('label_value').closest('form').requestSubmit()")
        await page.until("document.getElementById('detail').innerText.includes('HUMAN::alice')",
                         what="the label on the timeline")

        async def human_labels() -> int:
            _, body = await api_call(plane, "GET", f"/v1/cases/{case_id}")
            return sum(a["source_type"] == "HUMAN" for a in body["labels"])

        await wait_for(human_labels, lambda n: n == 1, what="the console's label in the Label Store")
        await page.js(f"document.querySelector('#queue tr.case[data-id=\"{chosen}\"]').click()")
        # In "Labels known now" (the label form lists LEGIT_CONFIRMED as an option whatever is known).
        await page.until("document.getElementById('detail').innerText.includes('HUMAN:LEGIT_CONFIRMED')",
                         what="the label known now")
        shot = tmp_path / "case_console.png"
        data = await page.screenshot(shot)
        errors = [line for line in page.console if "error" in line.lower()]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1400, 1000)
    assert len(data) > 20_000, "a page with a queue and a case, not a blank one"
    assert not errors, errors
    print(f"\ncase console screenshot: {shot}")
