"""Latency histograms: O(1) to record, fixed memory, percentiles good to one bucket (~5%).

Buckets are log-spaced by a factor of 1.1 from 0.1 ms to ~170 s; a percentile is read as the upper
bound of the bucket holding that rank, so it never understates a latency by more than one bucket
(10%). Every actor keeps one for "bus arrival -> committed" (for the Decision Fabric that is
admission -> decision, since a traffic record's arrival time is when IG's PutRecords accepted it);
components keep their own for the hops they own (decision -> outcome, admission -> audit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

_RATIO: Final = 1.1
_FLOOR_MS: Final = 0.1
_BUCKETS: Final = 150
_LOG_RATIO: Final = math.log(_RATIO)


def _upper(i: int) -> float:
    return _FLOOR_MS * _RATIO ** (i + 1)


@dataclass(slots=True)
class LatencyHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * _BUCKETS)
    total: int = 0
    max_ms: float = 0.0
    sum_ms: float = 0.0

    def observe(self, ms: float) -> None:
        i = 0 if ms <= _FLOOR_MS else min(_BUCKETS - 1, int(math.log(ms / _FLOOR_MS) / _LOG_RATIO))
        self.counts[i] += 1
        self.total += 1
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0 < q <= 100) in ms, or None before any observation."""
        if not self.total:
            return None
        rank = max(1, math.ceil(self.total * q / 100.0))
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(_upper(i), self.max_ms)
        return self.max_ms

    def summary(self) -> dict[str, float | int | None]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 3)

        return {"count": self.total, "p50": r(self.percentile(50)), "p95": r(self.percentile(95)),
                "p99": r(self.percentile(99)), "max": r(self.max_ms if self.total else None),
                "mean": r(self.sum_ms / self.total if self.total else None)}

    def buckets(self) -> list[tuple[float, int]]:
        """(upper bound ms, cumulative count) for each non-empty prefix: the Prometheus shape."""
        out: list[tuple[float, int]] = []
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if n:
                out.append((_upper(i), seen))
        return out
