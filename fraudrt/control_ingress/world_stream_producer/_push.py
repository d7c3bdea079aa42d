"""Push envelope batches to IG (`POST /v1/ingest/push`, body `{"events": [...]}`) with retries.

What is retried is `fraudrt.runtime.classify`'s call: timeouts, connection errors, 408, 429, 5xx,
and 401/403 (a key an operator must fix: the READY must still stream once it is fixed), with
exponential backoff and full jitter, never sooner than the server's `Retry-After`. Any other 4xx
(a request IG can never accept) is permanent and stops the stream: retrying would only repeat it.
Per-event results are matched by `index`; an event without an ADMIT/DUPLICATE/QUARANTINE result is
re-sent with the next attempt.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import anyio
import msgspec

from fraudrt.runtime import FailureKind, classify

log = logging.getLogger("fraudrt.world_stream_producer")

ACKED_DECISIONS: Final = frozenset({"ADMIT", "DUPLICATE", "QUARANTINE"})
PUSH_PATH: Final = "/v1/ingest/push"


class IgRejected(Exception):
    """IG refused the batch permanently (a 4xx the classification calls the request's fault)."""

    failure_kind = FailureKind.RECORD

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"IG_PUSH_REJECTED: HTTP {status}: {body}")
        self.status = status
        self.body = body


class IgRetryExhausted(Exception):
    """Transient failures outlasted the retry budget; the stream resumes from its checkpoint later."""

    failure_kind = FailureKind.DEPENDENCY


class PushAbandoned(Exception):
    """A drain was requested while waiting to retry: the batch stays unacknowledged (re-sent on resume)."""


class _Result(msgspec.Struct):
    index: int
    decision: str


class _Response(msgspec.Struct):
    results: list[_Result]


_decode_response: Final = msgspec.json.Decoder(_Response)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.25
    max_delay: float = 5.0
    timeout: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Full jitter over the exponential step; Retry-After is a floor, not a suggestion."""
        step = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        jittered = random.uniform(step / 2, step)
        return max(jittered, retry_after or 0.0)


@dataclass
class PushStats:
    requests: int = 0
    batches: int = 0
    events: int = 0
    retries: int = 0
    admitted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    retry_statuses: dict[str, int] = field(default_factory=dict)


def ingest_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(PUSH_PATH) else base + PUSH_PATH


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare enough that the backoff alone is fine


class IgPusher:
    def __init__(self, session: aiohttp.ClientSession, url: str, api_key: str | None, *,
                 retry: RetryPolicy | None = None, stats: PushStats | None = None,
                 stopping: anyio.Event | None = None) -> None:
        self._stopping = stopping
        self._session = session
        self._url = ingest_url(url)
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["X-IG-Api-Key"] = api_key
        self.retry = retry or RetryPolicy()
        self.stats = stats or PushStats()

    async def push(self, envelopes: Sequence[bytes]) -> list[str]:
        """Push encoded envelopes; returns each one's decision, in order, once all are acknowledged."""
        decisions: list[str | None] = [None] * len(envelopes)
        pending = list(range(len(envelopes)))
        self.stats.batches += 1
        attempt = 0
        while pending:
            attempt += 1
            body = b'{"events":[' + b",".join(envelopes[i] for i in pending) + b"]}"
            retry_after: float | None = None
            reason: str
            self.stats.requests += 1
            refused: aiohttp.ClientResponseError | None = None
            try:
                async with self._session.post(self._url, data=body, headers=self._headers,
                                              timeout=aiohttp.ClientTimeout(total=self.retry.timeout)) as resp:
                    status = resp.status
                    payload = await resp.read()
                    header = resp.headers.get("Retry-After")
                    if status != 200:
                        refused = aiohttp.ClientResponseError(resp.request_info, resp.history, status=status,
                                                              message=payload[:200].decode("utf-8", "replace"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                # No answer at all (refused, reset, timed out): never the batch's fault.
                status, payload, header = 0, b"", None
                reason = f"{type(exc).__name__}: {exc}"
            if status == 200:
                try:
                    results = _decode_response.decode(payload).results
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise IgRejected(status, f"unreadable push response: {exc}") from None
                still: list[int] = []
                answered = {r.index: r.decision for r in results}
                for position, original in enumerate(pending):
                    decision = answered.get(position)
                    if decision in ACKED_DECISIONS:
                        decisions[original] = decision
                    else:
                        still.append(original)
                self._count(decisions, pending, still)
                pending = still
                self.stats.consecutive_failures = 0
                if not pending:
                    break
                reason = f"{len(pending)} events without a decision"
            elif refused is not None and classify(refused).transient:
                retry_after = _retry_after(header)
                reason = f"HTTP {status}: {payload[:200].decode('utf-8', 'replace')}"
            elif refused is not None:
                self.stats.last_error = f"HTTP {status}: {payload[:256].decode('utf-8', 'replace')}"
                raise IgRejected(status, payload[:256].decode("utf-8", "replace")) from refused
            self.stats.consecutive_failures += 1
            self.stats.last_error = reason
            key = str(status or "connection")
            self.stats.retry_statuses[key] = self.stats.retry_statuses.get(key, 0) + 1
            if attempt >= self.retry.max_attempts:
                raise IgRetryExhausted(f"IG_PUSH_RETRY_EXHAUSTED after {attempt} attempts: {reason}")
            self.stats.retries += 1
            delay = self.retry.delay(attempt, retry_after)
            log.warning("WSP push retry %d/%d in %.2fs: %s", attempt, self.retry.max_attempts, delay, reason)
            if self._stopping is None:
                await anyio.sleep(delay)
                continue
            # A drain must not wait out a long backoff: the batch is simply re-sent after restart.
            with anyio.move_on_after(delay):
                await self._stopping.wait()
            if self._stopping.is_set():
                raise PushAbandoned(f"drain requested while retrying ({reason})")
        self.stats.events += len(envelopes)
        return [d or "" for d in decisions]

    def _count(self, decisions: list[str | None], sent: list[int], still: list[int]) -> None:
        left = set(still)
        for original in sent:
            if original in left:
                continue
            decision = decisions[original]
            if decision == "ADMIT":
                self.stats.admitted += 1
            elif decision == "DUPLICATE":
                self.stats.duplicates += 1
            elif decision == "QUARANTINE":
                self.stats.quarantined += 1
