"""The ladder itself, pure: signals -> the posture they call for (the baseline) -> the posture held.

Hysteresis: a worse baseline is taken at once; a better one only once the baseline has stayed better
than the held posture for the whole quiet period, and then the ladder moves to the *worst* baseline
seen during that period (a flapping signal never buys an upshift it did not earn). A baseline equal
to or worse than the posture restarts the quiet period. An idle platform reports healthy projectors
with no lag, so its baseline is NORMAL: idleness is never a fault (the reference's 120 s
"checkpoint age" turned a quiet stream into FAIL_CLOSED).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final

from fraudrt.rtdl.policy import rank, worst

_REASON_LIMIT: Final = 20


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one signal calls for now: `mode` (NORMAL when fine) and why."""

    signal: str
    mode: str
    reason: str = ""
    value: float | None = None


@dataclass(frozen=True, slots=True)
class Baseline:
    mode: str
    reasons: tuple[str, ...]


def baseline(verdicts: Iterable[Verdict]) -> Baseline:
    """The worst posture any signal calls for, with the reasons of every signal that is not fine."""
    found = [v for v in verdicts if v.mode != "NORMAL"]
    reasons = tuple(f"{v.signal}: {v.reason}" for v in found)[:_REASON_LIMIT]
    return Baseline(worst([v.mode for v in found]), reasons)


@dataclass(frozen=True, slots=True)
class LadderState:
    """The held posture and the quiet period in progress (None: no better baseline right now)."""

    mode: str
    posture_seq: int
    better_since: float | None = None
    # The worst baseline seen since `better_since`: what an upshift at the end of the period moves to.
    better_worst: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    state: LadderState
    changed: bool
    previous: str
    reason: str


def step(state: LadderState, base: Baseline, now: float, quiet_period: float) -> Step:
    """One tick of the ladder at wall time `now` (seconds)."""
    held = state.mode
    if rank(base.mode) > rank(held):
        new = LadderState(base.mode, state.posture_seq + 1)
        return Step(new, True, held, f"DOWNSHIFT {held}->{base.mode}")
    if rank(base.mode) == rank(held):
        return Step(replace(state, better_since=None, better_worst=None), False, held, "")
    since = state.better_since if state.better_since is not None else now
    target = base.mode if state.better_worst is None else worst([state.better_worst, base.mode])
    if now - since >= quiet_period:
        new = LadderState(target, state.posture_seq + 1)
        return Step(new, True, held, f"UPSHIFT {held}->{target} after {now - since:.0f}s of better signals")
    return Step(replace(state, better_since=since, better_worst=target), False, held, "")
