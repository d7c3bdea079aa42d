"""The one failure classification, checked against the exceptions the real clients raise."""

from __future__ import annotations

import aiohttp
import asyncpg
import botocore.exceptions as bx
import msgspec
import pytest

from fraudrt.runtime import BusError, FailureKind, StreamNotFoundError, ThrottledError, classify, is_transient

pytestmark = pytest.mark.unit


def _client_error(code: str, status: int) -> bx.ClientError:
    return bx.ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                          "PutObject")


def _pg(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("server says no")


@pytest.mark.parametrize("exc", [
    # What aiobotocore raises while SeaweedFS is down or restarting (issue 10, item 1).
    bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    bx.ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
    bx.ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    bx.ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
    bx.NoCredentialsError(),
    # aiohttp (the lean Kinesis and S3 clients).
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError("cut short"),
    aiohttp.ClientConnectionError("refused"),
    # Postgres starting up, read only, gone, overloaded, deadlocked.
    _pg(asyncpg.CannotConnectNowError),
    _pg(asyncpg.ReadOnlySQLTransactionError),
    _pg(asyncpg.AdminShutdownError),
    _pg(asyncpg.TooManyConnectionsError),
    _pg(asyncpg.DeadlockDetectedError),
    _pg(asyncpg.SerializationError),
    asyncpg.exceptions.ConnectionDoesNotExistError("closed"),
    asyncpg.InterfaceError("connection is closed"),
    # S3/Kinesis answers that mean "not now" or "fix the config", never "this record".
    _client_error("InternalError", 500),
    _client_error("ServiceUnavailable", 503),
    _client_error("ConditionalRequestConflict", 409),
    _client_error("AccessDenied", 403),
    _client_error("NoSuchBucket", 404),
    BusError("ConnectionError", "refused", retriable=True),
    ConnectionRefusedError(111, "refused"),
    TimeoutError(),
])
def test_dependency_failures_are_transient(exc: BaseException) -> None:
    assert is_transient(exc), classify(exc)
    assert classify(exc).kind == FailureKind.DEPENDENCY


@pytest.mark.parametrize("exc", [
    _client_error("SlowDown", 503),
    _client_error("ProvisionedThroughputExceededException", 400),
    ThrottledError("ProvisionedThroughputExceededException", "slow down"),
    aiohttp.ClientResponseError(None, (), status=429),  # type: ignore[arg-type]
])
def test_throttling_is_its_own_kind(exc: BaseException) -> None:
    assert classify(exc).kind == FailureKind.THROTTLED
    assert classify(exc).transient


@pytest.mark.parametrize("exc", [
    msgspec.DecodeError("not JSON"),
    msgspec.ValidationError("missing field"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
    RecursionError("nested too deep"),
    _pg(asyncpg.CharacterNotInRepertoireError),  # 22021: a NUL byte in text
    _pg(asyncpg.NumericValueOutOfRangeError),
    _client_error("NoSuchKey", 404),
    _client_error("InvalidArgument", 400),
    StreamNotFoundError("ResourceNotFoundException", "no such stream"),
    BusError("ValidationException", "record too large", retriable=False, status=400),
])
def test_bad_input_is_a_record_failure(exc: BaseException) -> None:
    assert classify(exc).kind == FailureKind.RECORD
    assert not is_transient(exc)


def test_bugs_are_not_transient_but_a_wrapped_outage_is() -> None:
    assert classify(KeyError("x")).kind == FailureKind.BUG
    try:
        try:
            raise bx.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        except bx.EndpointConnectionError as inner:
            raise RuntimeError("segment write failed") from inner
    except RuntimeError as outer:
        assert classify(outer).kind == FailureKind.DEPENDENCY
    # Raised while handling an outage but not *from* it: the bug is ours.
    try:
        try:
            raise ConnectionResetError()
        except ConnectionResetError:
            raise KeyError("oops")  # noqa: B904
    except KeyError as bug:
        assert classify(bug).kind == FailureKind.BUG


def test_an_exception_group_is_transient_if_any_member_is() -> None:
    group = ExceptionGroup("task group", [KeyError("x"), aiohttp.ServerDisconnectedError()])
    assert classify(group).kind == FailureKind.DEPENDENCY
    assert classify(ExceptionGroup("g", [KeyError("x")])).kind == FailureKind.BUG


def test_an_exception_may_state_its_own_kind() -> None:
    class Quarantine(Exception):
        failure_kind = "RECORD"

    class Outage(Exception):
        failure_kind = "DEPENDENCY"
        backoff = 2.0

    assert classify(Quarantine()).kind == FailureKind.RECORD
    assert classify(Outage()).backoff == 2.0
