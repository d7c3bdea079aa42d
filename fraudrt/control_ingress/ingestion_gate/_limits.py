"""Back-pressure at IG's door: how many pushes, and how many request bytes, may be in flight at once.

Without a bound, a burst of producers queues on Postgres connections (whose acquire timeout then
reads as a database outage: 503 and a RED health) and holds every body and its decoded events in
memory at once. Over a limit, a push is refused before its body is read, with 429 and Retry-After
(`fraudrt.runtime.classify` calls a 429 THROTTLED: the client slows down, nothing is wrong). The
check is O(1) per push; nothing is added per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# What a refused push is told to wait: about one push's time through IG on the embedded substrate.
RETRY_AFTER_SECONDS: Final = 1.0


@dataclass(slots=True)
class InFlightLimits:
    max_pushes: int
    max_bytes: int
    pushes: int = 0
    bytes: int = 0
    refused_total: int = 0

    def try_enter(self, size: int) -> str | None:
        """Count a push of `size` bytes in; None if admitted, else what it would exceed.

        A push larger than `max_bytes` alone is admitted when nothing else is in flight, so a
        limit below the body limit slows big pushes down rather than refusing them for good.
        """
        if self.pushes >= self.max_pushes:
            refused: str | None = f"{self.pushes} pushes in flight (ig.max_pushes_in_flight={self.max_pushes})"
        elif self.pushes and self.bytes + size > self.max_bytes:
            refused = (f"{self.bytes} + {size} request bytes in flight would exceed "
                       f"ig.max_bytes_in_flight={self.max_bytes}")
        else:
            self.pushes += 1
            self.bytes += size
            return None
        self.refused_total += 1
        return refused

    def leave(self, size: int) -> None:
        self.pushes -= 1
        self.bytes -= size

    def metrics(self) -> dict[str, int]:
        return {"pushes_in_flight": self.pushes, "push_bytes_in_flight": self.bytes,
                "pushes_refused_busy_total": self.refused_total}
