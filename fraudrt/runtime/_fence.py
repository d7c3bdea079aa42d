"""Progress fences: wait, cheaply and boundedly, until another component has applied a position.

A consumer that must not run ahead of a projector (the Decision Fabric deciding a traffic event
before the feature plane has applied the events before it) waits on the projector's checkpoint in
`rt_checkpoints` rather than sleeping or polling per event. Every commit that moves a checkpoint
notifies the `rt_checkpoints` channel with "<component> <platform_run_id>" (delivered at commit,
from any process); one listening connection per pack process wakes the waiters of that component,
which re-check with one query. A wait is bounded: at its deadline the caller gets `False` and records
why it went on without the fence (DESIGN §10). Components may notify channels of their own
(`pg_notify` in their batch) and wait on them the same way (`Notifications.wait`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg

from ._bus import seq_key
from ._checkpoint import NOTIFY_CHANNEL
from ._classify import classify

log = logging.getLogger("fraudrt.runtime.fence")


@dataclass
class Notifications:
    """One LISTEN connection per process; waiters keyed by (channel, payload)."""

    dsn: str
    _conn: Any = None
    _channels: set[str] = field(default_factory=set)
    _waiters: dict[tuple[str, str], anyio.Event] = field(default_factory=dict)
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    async def _ensure(self, channel: str) -> None:
        async with self._lock:
            if self._conn is not None and self._conn.is_closed():
                self._conn = None
                self._channels.clear()
            if self._conn is None:
                self._conn = await asyncpg.connect(self.dsn)
                self._conn.add_termination_listener(self._terminated)
            if channel not in self._channels:
                await self._conn.add_listener(channel, self._notified)
                self._channels.add(channel)

    def _terminated(self, _conn: Any) -> None:
        # The listener connection died: wake everyone (they re-check), reconnect on the next wait.
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        event = self._waiters.pop((channel, payload), None)
        if event is not None:
            event.set()

    def event(self, channel: str, payload: str) -> anyio.Event:
        """The event set by the next notification of `payload` on `channel` (register before checking)."""
        key = (channel, payload)
        event = self._waiters.get(key)
        if event is None:
            event = self._waiters[key] = anyio.Event()
        return event

    async def wait(self, channel: str, payload: str, check: Callable[[], Awaitable[bool]],
                   timeout: float) -> bool:
        """Until `check()` holds, re-checking on each notification of `payload`; False at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self._ensure(channel)
            except Exception as exc:
                if not classify(exc).transient:
                    raise
                log.warning("notification listener unavailable (%r); checking without it", exc)
            event = self.event(channel, payload)
            if await check():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Also wake now and then: a notification can be lost with a listener reconnect.
            with anyio.move_on_after(min(remaining, 1.0)):
                await event.wait()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


_COVERED_SQL = """
SELECT sequence_number FROM rt_checkpoints
 WHERE actor = $1 AND platform_run_id = $2 AND stream = $3 AND shard_id = $4
"""
_WATERMARK_SQL = """
SELECT min(watermark_ts) FROM rt_checkpoints WHERE actor = $1 AND platform_run_id = $2 AND stream = $3
"""


@dataclass
class ProgressFence:
    """Waits on other components' checkpoints for one platform run."""

    pool: Any
    notifications: Notifications
    platform_run_id: str

    async def covered(self, component: str, stream: str, shard_id: str, sequence_number: str) -> bool:
        async with self.pool.acquire() as conn:
            at = await conn.fetchval(_COVERED_SQL, component, self.platform_run_id, stream, shard_id)
        return at is not None and seq_key(at) >= seq_key(sequence_number)

    async def wait_covered(self, component: str, stream: str, shard_id: str, sequence_number: str,
                           timeout: float) -> bool:
        """True once `component`'s checkpoint on (stream, shard) is at or past `sequence_number`."""
        return await self.notifications.wait(
            NOTIFY_CHANNEL, f"{component} {self.platform_run_id}",
            lambda: self.covered(component, stream, shard_id, sequence_number), timeout)

    async def watermark(self, component: str, stream: str) -> str | None:
        """The lowest event-time watermark over the shards `component` has applied of `stream`."""
        async with self.pool.acquire() as conn:
            value: str | None = await conn.fetchval(_WATERMARK_SQL, component, self.platform_run_id, stream)
        return value

    async def wait_watermark(self, component: str, stream: str, ts_utc: str, timeout: float) -> bool:
        """True once `component` has applied `stream` up to event time `ts_utc` on every shard it read."""
        async def reached() -> bool:
            wm = await self.watermark(component, stream)
            return wm is not None and wm >= ts_utc

        return await self.notifications.wait(NOTIFY_CHANNEL, f"{component} {self.platform_run_id}", reached, timeout)
