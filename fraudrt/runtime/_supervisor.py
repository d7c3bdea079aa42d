"""Restart a crashed component with backoff; repeated crashes turn its health RED."""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio


@dataclass
class Supervision:
    name: str
    crash_window: float = 300.0
    red_after: int = 3
    restarts: int = 0
    last_error: str | None = None
    running: bool = False
    # A component must run until the drain: returning before it is a failure (RED), not GREEN.
    must_run: bool = False
    exited_early: bool = False
    _crashes: deque[float] = field(default_factory=deque)

    def record_crash(self, error: BaseException) -> None:
        now = time.monotonic()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.crash_window:
            self._crashes.popleft()
        self.last_error = f"{type(error).__name__}: {error}"[:500]

    @property
    def recent_crashes(self) -> int:
        now = time.monotonic()
        return sum(1 for t in self._crashes if now - t <= self.crash_window)

    def health(self) -> tuple[str, list[str]]:
        if self.must_run and self.exited_early:
            return "RED", [f"STOPPED: returned before the drain ({self.last_error or 'no error'})"]
        crashes = self.recent_crashes
        if crashes >= self.red_after:
            return "RED", [f"CRASH_LOOP: {crashes} crashes in {self.crash_window:.0f}s ({self.last_error})"]
        if crashes:
            return "AMBER", [f"RESTARTED: {crashes} crash(es) recently ({self.last_error})"]
        return "GREEN", []


async def supervise(sup: Supervision, body: Callable[[], Awaitable[None]], stopping: anyio.Event,
                    on_event: Callable[[str, dict[str, object]], None], log: logging.Logger,
                    max_backoff: float = 30.0, healthy_after: float = 60.0) -> None:
    """Run `body` until it returns normally or `stopping` is set; restart it when it raises.

    The restart delay doubles with each crash up to `max_backoff`, and starts over once the body
    has run `healthy_after` seconds without crashing: a crash a day later is not the 30th in a row.
    """
    delay = 0.5
    while True:
        sup.running = True
        started = time.monotonic()
        try:
            await body()
            sup.running = False
            if not stopping.is_set():
                sup.exited_early = True
            return
        except Exception as exc:
            sup.running = False
            if time.monotonic() - started >= healthy_after:
                delay = 0.5
            sup.record_crash(exc)
            log.exception("%s crashed; restarting in %.1fs", sup.name, delay)
            on_event("component_crashed", {"component": sup.name, "error": sup.last_error})
        if stopping.is_set():
            return
        with anyio.move_on_after(delay * random.uniform(0.8, 1.2)):
            await stopping.wait()
        if stopping.is_set():
            return
        sup.restarts += 1
        on_event("component_restarted", {"component": sup.name, "restarts": sup.restarts})
        delay = min(max_backoff, delay * 2)
