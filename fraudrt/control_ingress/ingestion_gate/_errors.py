"""IG's failure vocabulary: a dependency that is down (503 + Retry-After) vs. a bad request (4xx)."""

from __future__ import annotations

from typing import Literal

Dependency = Literal["ops_db", "object_store", "bus"]

# Health reason code per dependency (control_ingress §8.9).
REASON_BY_DEPENDENCY: dict[str, str] = {
    "ops_db": "OPS_DB_UNHEALTHY",
    "object_store": "OBJECT_STORE_UNHEALTHY",
    "bus": "BUS_UNHEALTHY",
}


class DependencyDown(Exception):
    """Postgres, S3 or Kinesis failed; the push is answered 503 and is safe to retry as it was."""

    def __init__(self, dependency: Dependency, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(f"{dependency}: {detail}")
        self.dependency: Dependency = dependency
        self.detail = detail
        self.retry_after = retry_after


class StillInFlight(Exception):
    """Events whose admission another request still holds after the wait: answer 503, retry later."""

    def __init__(self, event_ids: list[str], retry_after: float = 1.0) -> None:
        super().__init__(f"{len(event_ids)} event(s) still being published by another request")
        self.event_ids = event_ids
        self.retry_after = retry_after
