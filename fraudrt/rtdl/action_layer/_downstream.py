"""The simulated downstream: a processor's disposition API, with latency and failures you can set.

Every result is a pure function of (seed, idempotency key, attempt number): a re-execution after a
crash, or the retry of a rolled-back batch, gets exactly the answer the first call got, as a real
downstream does when the same idempotency key comes back. Different attempts of one key are
independent draws, so a transient failure can clear on the next attempt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Final, Literal

import anyio

from fraudrt.contracts import Attempt

from ._config import DownstreamConfig, RetryConfig

State = Literal["SUCCEEDED", "TRANSIENT_FAILURE", "PERMANENT_FAILURE"]
PROVIDER_CODE: Final[dict[str, str]] = {
    "SUCCEEDED": "OK", "TRANSIENT_FAILURE": "UNAVAILABLE_RETRY", "PERMANENT_FAILURE": "REJECTED_BY_PROVIDER",
}
_SCALE: Final = float(2**64)


def _draws(seed: str, key: str, attempt: int) -> tuple[float, float, float]:
    """Three independent uniforms in [0, 1) for one (key, attempt)."""
    d = hashlib.sha256(f"{seed}|{key}|{attempt}".encode()).digest()
    return (int.from_bytes(d[:8], "big") / _SCALE, int.from_bytes(d[8:16], "big") / _SCALE,
            int.from_bytes(d[16:24], "big") / _SCALE)


class SimulatedDownstream:
    def __init__(self, config: DownstreamConfig,
                 sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        self.config = config
        self._sleep = sleep
        # Calls made by this process (a test compares them with the attempts the outcomes record).
        self.calls = 0

    def verdict(self, idempotency_key: str, attempt: int) -> tuple[State, float]:
        """(result, latency in ms) of this attempt, without calling."""
        c = self.config
        u, v, _ = _draws(c.seed, idempotency_key, attempt)
        latency = c.latency_ms + c.latency_jitter_ms * v
        if u < c.permanent_failure_rate:
            return "PERMANENT_FAILURE", latency
        if u < c.permanent_failure_rate + c.transient_failure_rate:
            return "TRANSIENT_FAILURE", latency
        return "SUCCEEDED", latency

    async def execute(self, idempotency_key: str, attempt: int) -> Attempt:
        state, latency = self.verdict(idempotency_key, attempt)
        self.calls += 1
        if latency > 0:
            await self._sleep(latency / 1000.0)
        return Attempt(attempt_seq=attempt, state=state, provider_code=PROVIDER_CODE[state],
                       latency_ms=round(latency, 3))

    def provider_ref(self, idempotency_key: str) -> str:
        """The downstream's reference for an executed action (stable per key)."""
        return "sim:" + hashlib.sha256(f"{self.config.seed}|ref|{idempotency_key}".encode()).hexdigest()[:24]


def retry_delay_s(retry: RetryConfig, seed: str, idempotency_key: str, attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): exponential, capped, +-20% jitter that
    is itself deterministic, so a restart keeps the schedule."""
    _, _, w = _draws(seed, idempotency_key, attempt)
    base = min(retry.max_backoff_ms, retry.base_backoff_ms * 2 ** (attempt - 1))
    return float(base * (0.8 + 0.4 * w) / 1000.0)
