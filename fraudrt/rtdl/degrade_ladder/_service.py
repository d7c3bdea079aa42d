"""The Degrade Ladder service: once a tick, signals -> baseline -> posture, persisted on change.

Each tick reads the watched projectors' reports and the bundles' availability (`_signals.py`), takes
one step of the ladder (`_ladder.py`) from the posture the change log holds, and in one transaction
appends a change when the posture moves and rewrites the run's heartbeat row. The change log is read
back every tick, so an operator's override (`set_posture`) or a second ladder's change is the held
posture from then on. A tick that cannot reach Postgres is retried at the next tick (the posture is
not persisted meanwhile, and the heartbeat stops: DF then stops trusting the posture).

Health is the platform's posture as the ladder sees it: GREEN in NORMAL, AMBER in DEGRADED_1/2, RED in
FAIL_CLOSED, and AMBER/RED when ticks fail for 5 s / 30 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final

import anyio

from fraudrt.rtdl.policy import DecisionPolicy, load_policy
from fraudrt.runtime import ComponentContext, Findings, Service, classify

from . import _store
from ._ladder import Baseline, LadderState, Verdict, baseline, step
from ._signals import BundleCheck, projector_verdict, read_report, signal_values

_TICK_FAIL_AMBER_S: Final = 5.0
_TICK_FAIL_RED_S: Final = 30.0
_HEALTH_OF: Final = {"NORMAL": "GREEN", "DEGRADED_1": "AMBER", "DEGRADED_2": "AMBER", "FAIL_CLOSED": "RED"}


class DegradeLadder(Service):
    name: ClassVar[str] = "degrade_ladder"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.rtdl.degrade_ladder",)

    def __init__(self, clock: Callable[[], float] = time.time, policy: DecisionPolicy | None = None) -> None:
        self._clock = clock
        self._policy = policy
        self._ready = asyncio.Event()
        self.ready = self._ready
        self.state: LadderState | None = None
        self.base = Baseline("NORMAL", ())
        self.verdicts: list[Verdict] = []
        self.ticks = 0
        self.transitions = 0
        self.tick_failures = 0
        self.failing_since: float | None = None
        self.last_failure: str | None = None
        self.started_at = clock()

    @property
    def policy(self) -> DecisionPolicy:
        if self._policy is None:
            self._policy = load_policy()
        return self._policy

    async def run(self, ctx: ComponentContext) -> None:
        if self._policy is None:
            self._policy = load_policy(ctx.options.get("policy"))
        runs_root = Path(ctx.settings.runs_root)
        bundles = BundleCheck(self.policy)
        self.started_at = self._clock()
        self._ready.set()
        tick = self.policy.ladder.tick_seconds
        while not ctx.stopping.is_set():
            started = time.monotonic()
            try:
                await self.tick(ctx.pool, ctx.platform_run_id, runs_root, bundles)
            except Exception as exc:
                if not classify(exc).transient:
                    raise
                self._failed(exc)
            with anyio.move_on_after(max(0.0, tick - (time.monotonic() - started))):
                await ctx.stopping.wait()

    def _failed(self, exc: BaseException) -> None:
        self.tick_failures += 1
        self.last_failure = f"{type(exc).__name__}: {exc}"[:300]
        if self.failing_since is None:
            self.failing_since = self._clock()

    def observe(self, runs_root: Path, platform_run_id: str, bundles: BundleCheck) -> list[Verdict]:
        """Every signal's verdict now."""
        now = self._clock()
        ladder = self.policy.ladder
        verdicts = [projector_verdict(spec, read_report(runs_root, platform_run_id, spec.component), now=now,
                                      since_start=now - self.started_at, ladder=ladder)
                    for spec in ladder.signals]
        return verdicts + bundles.verdicts()

    async def tick(self, pool: Any, platform_run_id: str, runs_root: Path, bundles: BundleCheck) -> None:
        verdicts = self.observe(runs_root, platform_run_id, bundles)
        base = baseline(verdicts)
        now = self._clock()
        async with pool.acquire() as conn, conn.transaction():
            held = await _store.load_state(conn, platform_run_id)
            if held is None:
                # The run's first posture is what the signals call for, whatever it is.
                new, changed, previous, reason = LadderState(base.mode, 1), True, None, "INITIAL"
            else:
                moved = step(held, base, now, self.policy.ladder.quiet_period_seconds)
                new, changed, previous, reason = moved.state, moved.changed, held.mode, moved.reason
            if changed:
                await _store.append_change(conn, platform_run_id, posture_seq=new.posture_seq, mode=new.mode,
                                           previous=previous, reason=reason, reasons=base.reasons,
                                           signals=signal_values(verdicts), policy_digest=self.policy.digest,
                                           decided_at=now)
            await _store.heartbeat(conn, platform_run_id, new, base.mode)
        self.state, self.base, self.verdicts = new, base, verdicts
        self.ticks += 1
        self.transitions += int(changed)
        self.failing_since = None

    # ------------------------------------------------------------------ health and metrics

    def health(self) -> tuple[str, list[str]]:
        found = Findings()
        if self.state is not None:
            state = _HEALTH_OF[self.state.mode]
            if state != "GREEN":
                found.flag(state, f"POSTURE_{self.state.mode}: " + "; ".join(self.base.reasons[:3]))
        if self.failing_since is not None:
            down = self._clock() - self.failing_since
            found.ladder(down, _TICK_FAIL_AMBER_S, _TICK_FAIL_RED_S,
                         f"TICKS_FAILING: {down:.0f}s ({self.last_failure})")
        return found.verdict()

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "posture": self.state.mode if self.state else None,
            "posture_seq": self.state.posture_seq if self.state else 0,
            "baseline": self.base.mode,
            "ticks_total": self.ticks,
            "transitions_total": self.transitions,
            "tick_failures_total": self.tick_failures,
        }
        for v in self.verdicts:
            out[f"signal.{v.signal}"] = v.mode
            if v.value is not None:
                out[f"signal_value.{v.signal}"] = round(v.value, 3)
        return out

    def health_details(self) -> dict[str, Any]:
        return {"posture": self.state.mode if self.state else None, "baseline": self.base.mode,
                "baseline_reasons": list(self.base.reasons), "policy_digest": self.policy.digest}
