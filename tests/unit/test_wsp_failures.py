"""Which failures end a READY's stream for good (FAILED, with the reason) and which go back to the
supervisor (raised, the stream resumes from its checkpoint): WSP asks the one classification."""

from __future__ import annotations

import asyncpg
import pytest
from botocore.exceptions import EndpointConnectionError

from fraudrt.control_ingress.world_stream_producer import IgRejected, IgRetryExhausted, PushAbandoned
from fraudrt.control_ingress.world_stream_producer._stream import _outcome

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("exc", [
    OSError("AWS Error NETWORK_CONNECTION during GetObject operation: Could not connect to server"),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1/x"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    IgRetryExhausted("IG_PUSH_RETRY_EXHAUSTED after 8 attempts: HTTP 503"),
    ExceptionGroup("push workers", [IgRetryExhausted("IG_PUSH_RETRY_EXHAUSTED")]),
    # One lane rejected, another ran out of retries: retry; a restart meets the rejection again.
    ExceptionGroup("push workers", [IgRejected(400, "bad"), IgRetryExhausted("IG_PUSH_RETRY_EXHAUSTED")]),
    KeyError("a bug: crash, restart, RED after a few"),
], ids=["pyarrow-network", "botocore-endpoint", "pg-starting-up", "ig-exhausted", "ig-exhausted-in-group",
        "mixed-group", "bug"])
def test_transient_failures_and_bugs_are_raised_for_the_supervisor(exc: Exception) -> None:
    assert _outcome(exc) is None


@pytest.mark.parametrize(("exc", "reason"), [
    (FileNotFoundError(2, "Path does not exist 'oracle-store/x/part-000001.parquet'"), "STREAM_VIEW_UNREADABLE"),
    (ValueError("not a ts_utc (YYYY-MM-DDTHH:MM:SS.ffffffZ): '2026-01-01 00:00'"), "STREAM_VIEW_UNREADABLE"),
    (ExceptionGroup("push workers", [IgRejected(413, "too large")]), "IG_PUSH_REJECTED: HTTP 413"),
], ids=["part-missing", "row-unreadable", "ig-rejected"])
def test_permanent_failures_fail_the_ready_with_their_reason(exc: Exception, reason: str) -> None:
    outcome = _outcome(exc)
    assert outcome is not None and outcome[0] == "FAILED" and outcome[1] is not None and reason in outcome[1]


def test_a_drain_during_a_retry_stops_the_stream() -> None:
    assert _outcome(ExceptionGroup("push workers", [PushAbandoned("drain")])) == ("STOPPED", None)
