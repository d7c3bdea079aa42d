"""DF health from its own signals, against thresholds an operator of a real-time decision lane sets.

Why these numbers (all overridable per pack in `options.health`):

- *Pending age.* In steady state a request is decided within its batch (p99 admit -> decision is
  meant to stay under 50 ms); one still waiting for context after 2 s means a projector is behind
  (AMBER). After 30 s the per-flow deadline (10 s by default) should long have decided it, so the
  deadlines are not firing (RED).
- *Deadline decisions.* A decision made at its deadline went out without its context (the safe
  default of the posture): above 1% of the decisions of the last 5 minutes the lane is deciding
  blind often enough to matter (AMBER), above 10% it is mostly blind (RED).
- *Posture.* DEGRADED_1/2 take features or the model away (AMBER); FAIL_CLOSED holds every payment
  for review (RED); a posture DF cannot trust (none, or its ladder stopped ticking) is FAIL_CLOSED.
- *Lag.* How far the last batch was behind the bus (2 s AMBER, 30 s RED, as the projectors), looked
  at only for batches of the last 5 s: an idle stream is GREEN.
- *Errors.* Dead-lettered records AMBER from 1, RED from 100; a changed copy of a decided event
  AMBER; failed batches AMBER, RED after 3 in a row; a bundle that cannot be loaded RED.
"""

from __future__ import annotations

import collections

from fraudrt.runtime import Findings, HealthThresholds


class Thresholds(HealthThresholds, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pending_amber_s: float = 2.0
    pending_red_s: float = 30.0
    deadline_share_amber: float = 0.01
    deadline_share_red: float = 0.10
    deadline_window_s: float = 300.0
    lag_amber_s: float = 2.0
    lag_red_s: float = 30.0
    lag_window_s: float = 5.0
    rejected_amber: int = 1
    rejected_red: int = 100
    mismatches_amber: int = 1
    failed_batches_amber: int = 1
    failed_batches_red: int = 3


class DecisionWindow:
    """Decisions and deadline decisions per wall-clock second over the last `window_s` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._seconds: collections.deque[list[int]] = collections.deque()  # [second, decisions, deadlines]

    def add(self, now: float, decisions: int, deadlines: int) -> None:
        second = int(now)
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += decisions
            self._seconds[-1][2] += deadlines
        else:
            self._seconds.append([second, decisions, deadlines])
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._seconds and self._seconds[0][0] < now - self.window_s:
            self._seconds.popleft()

    def totals(self, now: float) -> tuple[int, int]:
        self._trim(now)
        return sum(s[1] for s in self._seconds), sum(s[2] for s in self._seconds)


def evaluate(t: Thresholds, *, now: float, oldest_pending_at: float | None, pending: int,
             window: tuple[int, int], posture: str | None, posture_problem: str | None,
             last_commit_at: float | None, last_lag_s: float | None, rejected: int, mismatches: int,
             failed_batches: int, bundle_problems: list[str]) -> tuple[str, list[str]]:
    """(state, reasons): the worst of the checks; reasons carry the numbers behind them."""
    found = Findings()
    if oldest_pending_at is not None:
        age = now - oldest_pending_at
        found.ladder(age, t.pending_amber_s, t.pending_red_s,
                     f"JOIN_WAIT: {pending} requests waiting for context, oldest {age:.1f}s")
    decisions, deadlines = window
    if deadlines and decisions:
        share = deadlines / decisions
        found.ladder(share, t.deadline_share_amber, t.deadline_share_red,
                     f"CONTEXT_MISSING_DECISIONS: {deadlines} of {decisions} decisions in the last "
                     f"{t.deadline_window_s:.0f}s made at their deadline ({share:.1%})")
    if posture_problem is not None:
        found.flag("RED", posture_problem)
    elif posture in ("DEGRADED_1", "DEGRADED_2"):
        found.flag("AMBER", f"POSTURE_{posture}")
    elif posture == "FAIL_CLOSED":
        found.flag("RED", "POSTURE_FAIL_CLOSED: every payment is held for review")
    if last_commit_at is not None and last_lag_s is not None and now - last_commit_at <= t.lag_window_s:
        found.ladder(last_lag_s, t.lag_amber_s, t.lag_red_s, f"LAG: decisions {last_lag_s:.1f}s behind the bus")
    found.ladder(rejected, t.rejected_amber, t.rejected_red, f"DEAD_LETTERS: {rejected} records rejected")
    found.ladder(mismatches, t.mismatches_amber, None,
                 f"PAYLOAD_MISMATCHES: {mismatches} changed copies of known traffic events")
    found.ladder(failed_batches, t.failed_batches_amber, t.failed_batches_red,
                 f"BATCH_FAILURES: {failed_batches} failed in a row")
    for problem in bundle_problems:
        found.flag("RED", f"BUNDLE_UNAVAILABLE: {problem}")
    return found.verdict()
