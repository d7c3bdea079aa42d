"""One classification of failures, used by the runner, the outbox relay, IG and every actor.

The question every caller asks of an exception is the same: is a dependency failing (wait and try
again, however long it takes, and never blame the record), or is this input bad for good (park it,
dead-letter it, quarantine it, with the reason)? Four separate type lists answered it differently
before; a botocore ``EndpointConnectionError`` during a SeaweedFS outage was taken for a poison
record and dead-lettered. This module is the only place that knows exception types.

Kinds:

- ``DEPENDENCY``: a service is unreachable, restarting, read-only, timing out or failing with a 5xx;
  or its credentials/config are refused (an operator must fix them; the record is not to blame).
- ``THROTTLED``: a service asks us to slow down (Kinesis ``ProvisionedThroughputExceeded``, S3
  ``SlowDown``, HTTP 429).
- ``RECORD``: this input can never succeed as it is (undecodable, invalid, too large, a Postgres
  data exception such as a NUL byte in text, a 4xx that names the request).
- ``BUG``: anything else: our code raised. Retried a few times, then treated like ``RECORD`` by
  whoever isolates records, so one bad path cannot block a shard, but logged as a bug.

An exception may also state its own policy: a ``FraudrtRuntimeError`` (``retriable``), or any
exception carrying a ``failure_kind`` attribute. A wrapper whose own type says nothing is judged by
its ``__cause__`` (``raise ... from exc``); an exception group is transient if any member is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

from ._errors import FraudrtRuntimeError, ThrottledError


class FailureKind(enum.StrEnum):
    DEPENDENCY = "DEPENDENCY"
    THROTTLED = "THROTTLED"
    RECORD = "RECORD"
    BUG = "BUG"


@dataclass(frozen=True, slots=True)
class Failure:
    """What to do about an exception: its kind, a short stable code for logs and health, a first backoff."""

    kind: FailureKind
    code: str
    backoff: float = 0.0

    @property
    def transient(self) -> bool:
        """A dependency's fault: retry with backoff, never dead-letter or quarantine for it."""
        return self.kind in (FailureKind.DEPENDENCY, FailureKind.THROTTLED)


# SQLSTATE classes and codes that say the server (or the connection to it) failed, not the statement.
_PG_TRANSIENT_CLASSES: Final = frozenset({
    "08",  # connection exception
    "53",  # insufficient resources (disk full, out of memory, too many connections)
    "57",  # operator intervention: admin/crash shutdown, 57P03 cannot connect now (starting up), cancel
    "58",  # system error (I/O)
    "40",  # transaction rollback: serialization failure, deadlock
})
_PG_TRANSIENT_CODES: Final = frozenset({
    "25006",  # read-only SQL transaction: a standby, or a primary being demoted
    "55P03",  # lock not available
    "55006",  # object in use
    "28000", "28P01",  # login refused: an operator must fix the credentials, not the record
    "3D000",  # database does not exist (yet)
    "42501",  # insufficient privilege: a grant is missing
})
# Codes of AWS-style services (S3, Kinesis) that mean "not now" rather than "never".
_AWS_THROTTLE: Final = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ProvisionedThroughputExceededException",
    "LimitExceededException", "KMSThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestThrottled", "429",
})
_AWS_DEPENDENCY: Final = frozenset({
    "RequestTimeout", "RequestTimeoutException", "InternalError", "InternalFailure", "ServiceUnavailable",
    "ServiceUnavailableException", "ConditionalRequestConflict", "OperationAborted",
    # Credentials and configuration: every record would fail the same way until an operator acts.
    "AccessDenied", "AccessDeniedException", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "ExpiredTokenException", "UnrecognizedClientException", "InvalidClientTokenId", "NoSuchBucket",
    "KMSInvalidStateException", "KMSDisabledException", "KMSNotFoundException", "KMSAccessDeniedException",
})

_DEPENDENCY_BACKOFF: Final = 0.5
_THROTTLE_BACKOFF: Final = 1.0


def _dependency(code: str) -> Failure:
    return Failure(FailureKind.DEPENDENCY, code, _DEPENDENCY_BACKOFF)


def _throttled(code: str) -> Failure:
    return Failure(FailureKind.THROTTLED, code, _THROTTLE_BACKOFF)


def _record(code: str) -> Failure:
    return Failure(FailureKind.RECORD, code)


def _http_status(status: int, code: str) -> Failure:
    if status == 429:
        return _throttled(code)
    if status >= 500 or status in (408, 409):
        return _dependency(code)
    if status in (401, 403):
        return _dependency(code)
    return _record(code)


def _classify_postgres(exc: Any) -> Failure | None:
    import asyncpg

    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        return _dependency(f"PG_{type(exc).__name__}")
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state[:2] in _PG_TRANSIENT_CLASSES or state in _PG_TRANSIENT_CODES:
            return _dependency(f"PG_{state}")
        if state[:2] == "22":  # data exception: a value this record carries (NUL in text, out of range)
            return _record(f"PG_{state}")
        return Failure(FailureKind.BUG, f"PG_{state or type(exc).__name__}")
    return None


def _classify_botocore(exc: Any) -> Failure | None:
    import botocore.exceptions as bx

    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code") or "ClientError")
        status = int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode") or 0)
        if code in _AWS_THROTTLE:
            return _throttled(code)
        if code in _AWS_DEPENDENCY:
            return _dependency(code)
        return _http_status(status, code) if status else _record(code)
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError | bx.NoCredentialsError
                  | bx.CredentialRetrievalError | bx.IncompleteReadError | bx.NoRegionError):
        return _dependency(type(exc).__name__)
    if isinstance(exc, bx.ParamValidationError):
        return _record(type(exc).__name__)
    return None


def _classify_aiohttp(exc: Any) -> Failure | None:
    import aiohttp

    if isinstance(exc, aiohttp.ClientResponseError):
        return _http_status(exc.status, f"HTTP{exc.status}")
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return _dependency(type(exc).__name__)
    return None


def _classify_one(exc: BaseException) -> Failure:
    own = getattr(exc, "failure_kind", None)
    if own is not None:
        kind = FailureKind(own)
        return Failure(kind, type(exc).__name__, float(getattr(exc, "backoff", 0.0) or 0.0))
    if isinstance(exc, FraudrtRuntimeError):
        if exc.retriable:
            kind = FailureKind.THROTTLED if isinstance(exc, ThrottledError) else FailureKind.DEPENDENCY
            return Failure(kind, getattr(exc, "code", type(exc).__name__), exc.backoff)
        return _record(getattr(exc, "code", type(exc).__name__))
    for probe in (_classify_postgres, _classify_botocore, _classify_aiohttp):
        found = probe(exc)
        if found is not None:
            return found
    if isinstance(exc, TimeoutError | ConnectionError):
        return _dependency(type(exc).__name__)
    if isinstance(exc, OSError):
        # Sockets, pipes, a full disk: the machine or a peer, never the record.
        return _dependency(f"{type(exc).__name__}[{exc.errno}]" if exc.errno else type(exc).__name__)
    if isinstance(exc, RecursionError | UnicodeError | ValueError):
        # Undecodable or invalid input (msgspec's DecodeError/ValidationError are ValueErrors),
        # nesting deeper than a decoder will follow.
        return _record(type(exc).__name__)
    return Failure(FailureKind.BUG, type(exc).__name__)


def classify(exc: BaseException) -> Failure:
    """The failure an exception stands for (see the module docstring)."""
    if isinstance(exc, BaseExceptionGroup):
        members = [classify(e) for e in exc.exceptions]
        for kind in (FailureKind.THROTTLED, FailureKind.DEPENDENCY, FailureKind.BUG, FailureKind.RECORD):
            for m in members:
                if m.kind == kind:
                    return m
        return Failure(FailureKind.BUG, type(exc).__name__)
    found = _classify_one(exc)
    seen = {id(exc)}
    cause = exc.__cause__
    # A generic wrapper (`raise RuntimeError("publish failed") from exc`) is judged by what it wraps.
    while found.kind == FailureKind.BUG and cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        inner = _classify_one(cause)
        if inner.kind != FailureKind.BUG:
            return inner
        cause = cause.__cause__
    return found


def is_transient(exc: BaseException) -> bool:
    return classify(exc).transient
