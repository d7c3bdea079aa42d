"""IG's failure vocabulary: a dependency that is down (503 + Retry-After), too much work in flight
(429 + Retry-After), or a bad request (4xx).

Which exceptions of the clients underneath mean "a dependency is down" is decided by
`fraudrt.runtime.classify`, the one classification of the platform; these errors carry the
answer to the HTTP layer (and carry their own `failure_kind`, so `classify` reads them too).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from fraudrt.runtime import classify

Dependency = Literal["ops_db", "object_store", "bus"]

# Health reason code per dependency (control_ingress §8.9).
REASON_BY_DEPENDENCY: dict[str, str] = {
    "ops_db": "OPS_DB_UNHEALTHY",
    "object_store": "OBJECT_STORE_UNHEALTHY",
    "bus": "BUS_UNHEALTHY",
}


class DependencyDown(Exception):
    """Postgres, S3 or Kinesis failed; the push is answered 503 and is safe to retry as it was."""

    failure_kind: ClassVar[str] = "DEPENDENCY"

    def __init__(self, dependency: Dependency, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(f"{dependency}: {detail}")
        self.dependency: Dependency = dependency
        self.detail = detail
        self.retry_after = retry_after


class StillInFlight(Exception):
    """Events whose admission another request still holds after the wait: answer 503, retry later."""

    failure_kind: ClassVar[str] = "DEPENDENCY"

    def __init__(self, event_ids: list[str], retry_after: float = 1.0) -> None:
        super().__init__(f"{len(event_ids)} event(s) still being published by another request")
        self.event_ids = event_ids
        self.retry_after = retry_after


class InvalidInput(Exception):
    """A value a dependency refused for good (a Postgres data exception): answer 400, never retry as is.

    Admission and the lookup's own checks keep such values away from the store; this is the
    backstop that keeps a missed case a 4xx rather than a 500.
    """

    failure_kind: ClassVar[str] = "RECORD"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def dependency_down(dependency: Dependency, exc: BaseException) -> DependencyDown | None:
    """`DependencyDown` if the platform's classification calls `exc` (raised by `dependency`'s
    client) transient: an outage, a timeout, throttling, refused credentials. None otherwise."""
    failure = classify(exc)
    if not failure.transient:
        return None
    return DependencyDown(dependency, f"{failure.code}: {type(exc).__name__}: {exc}",
                          retry_after=max(1.0, failure.backoff))
