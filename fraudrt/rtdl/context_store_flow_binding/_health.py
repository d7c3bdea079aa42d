"""CSFB health from its own signals, against thresholds an operator of a real-time decision lane sets.

Why these numbers: the Decision Fabric cannot decide an AUTH_REQUEST until its binding is complete,
and aims at p99 admit -> decision <= 50 ms. The three context records of an arrival carry the same
event time and are streamed together, so on a healthy bus a binding completes within a batch or two
(well under a second). A binding still waiting after 5 s means a context stream is lagging or has
lost records and decisions are queuing on it (AMBER); after 30 s any sensible join-wait deadline
has passed and decisions go out as CONTEXT_MISSING (RED). The same two bounds apply to how far the
applied state is behind the bus. Any record CSFB had to reject (dead letter) or any changed copy of
an event (mismatch) needs a person to look (AMBER); 100 rejected records is a broken producer or a
schema change, not a stray record (RED). A batch that failed once is being retried (AMBER); three
failures in a row means the runner is isolating records one by one (RED).

An idle stream is GREEN: nothing waits, and the lag check only looks at batches committed in the
last `lag_window_s` seconds (the actor does not see how far behind the stream head its reader is
when nothing arrives; the runtime exports that as `lag_ms.<stream>`).
"""

from __future__ import annotations

from fraudrt.runtime import Findings, HealthThresholds


class Thresholds(HealthThresholds, frozen=True, kw_only=True, forbid_unknown_fields=True):
    join_wait_amber_s: float = 5.0
    join_wait_red_s: float = 30.0
    apply_lag_amber_s: float = 5.0
    apply_lag_red_s: float = 30.0
    lag_window_s: float = 5.0
    rejected_amber: int = 1
    rejected_red: int = 100
    mismatches_amber: int = 1
    failed_batches_amber: int = 1
    failed_batches_red: int = 3


def evaluate(t: Thresholds, *, now: float, oldest_waiting_at: float | None, waiting: int,
             last_commit_at: float | None, last_apply_lag_s: float | None, rejected: int, mismatches: int,
             failed_batches: int) -> tuple[str, list[str]]:
    """(state, reasons): the worst of the checks; reasons are stable codes with the numbers behind them."""
    found = Findings()
    if oldest_waiting_at is not None:
        age = now - oldest_waiting_at
        what = f"{waiting} bindings waiting, oldest {age:.1f}s"
        found.ladder(age, t.join_wait_amber_s, t.join_wait_red_s, f"JOIN_WAIT_SLOW: {what}",
                     red_reason=f"JOIN_WAIT_STALLED: {what}")
    if last_commit_at is not None and last_apply_lag_s is not None and now - last_commit_at <= t.lag_window_s:
        what = f"state {last_apply_lag_s:.1f}s behind the bus"
        found.ladder(last_apply_lag_s, t.apply_lag_amber_s, t.apply_lag_red_s, f"APPLY_LAG: {what}",
                     red_reason=f"APPLY_LAG_HIGH: {what}")
    found.ladder(rejected, t.rejected_amber, t.rejected_red, f"DEAD_LETTERS: {rejected} records rejected")
    found.ladder(mismatches, t.mismatches_amber, None,
                 f"PAYLOAD_MISMATCHES: {mismatches} changed copies of known events")
    found.ladder(failed_batches, t.failed_batches_amber, t.failed_batches_red,
                 f"BATCH_FAILURES: {failed_batches} failed in a row")
    return found.verdict()
