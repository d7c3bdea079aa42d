"""Health for the case + labels plane: a list of (signal, AMBER at, RED at) checks, worst one wins.

The signals are the ones an operator of a case queue acts on: records the plane had to reject
(dead letters: one needs a look, a hundred is a broken producer), changed copies of known ids
(mismatches: someone re-used an id for other content; always worth a look, never RED by itself,
since nothing was overwritten), and per component the one thing that says it is stuck (CM: the
API answering 5xx). Batches failing and dependencies down are the runtime's own health.
An idle plane is GREEN.
"""

from __future__ import annotations

from collections.abc import Iterable

from fraudrt.runtime import Findings, HealthThresholds


class Thresholds(HealthThresholds, frozen=True, kw_only=True, forbid_unknown_fields=True):
    dead_letters_amber: int = 1
    dead_letters_red: int = 100
    mismatches_amber: int = 1
    api_errors_amber: int = 1  # 5xx answers of the investigator API (bugs or dependency outages)
    api_errors_red: int = 20


Check = tuple[str, float, float | None, float | None]  # (reason, value, AMBER at, RED at)


def assess(checks: Iterable[Check]) -> tuple[str, list[str]]:
    """(state, reasons): each check whose value reaches a bound adds its reason with the number."""
    found = Findings()
    for reason, value, amber, red in checks:
        found.ladder(value, amber, red, f"{reason}: {value:g}")
    return found.verdict()


def common_checks(t: Thresholds, *, dead_letters: int, mismatches: int) -> list[Check]:
    return [("DEAD_LETTERS", dead_letters, t.dead_letters_amber, t.dead_letters_red),
            ("PAYLOAD_MISMATCHES", mismatches, t.mismatches_amber, None)]
