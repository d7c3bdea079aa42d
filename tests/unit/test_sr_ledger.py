"""SR's write-once ledger against a stubbed S3 client: what each conditional-PUT answer means.

Real S3 answers a conditional PUT with 412 `PreconditionFailed` when the object exists, and with 409
`ConditionalRequestConflict` while a conflicting write to the same key is still in progress (the
outcome is not known yet: retry). Only the first may be read as "already there".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from botocore.exceptions import ClientError

from fraudrt.control_ingress.scenario_runner import LedgerDrift, _ledger

pytestmark = pytest.mark.unit

DOC = json.dumps({"scenario_run_id": "s1", "created_at_utc": "2026-01-01T00:00:00.000000Z"}).encode()


def client_error(code: str, status: int, op: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aenter__(self) -> _Body:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read(self) -> bytes:
        return self.data


class StubS3:
    """One key's worth of S3. `put_answers` are consumed one per put_object: an exception to raise, or
    None to store the body (honouring If-None-Match: * against what is stored)."""

    def __init__(self, put_answers: list[Exception | None], stored: bytes | None = None) -> None:
        self.put_answers = put_answers
        self.stored = stored
        self.puts = 0
        self.gets = 0

    async def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.gets += 1
        if self.stored is None:
            raise client_error("NoSuchKey", 404, "GetObject")
        return {"Body": _Body(self.stored)}

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes, IfNoneMatch: str,
                         ContentType: str) -> dict[str, Any]:
        self.puts += 1
        answer = self.put_answers.pop(0) if self.put_answers else None
        if answer is not None:
            raise answer
        if self.stored is not None:
            raise client_error("PreconditionFailed", 412, "PutObject")
        self.stored = Body
        return {}


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(anyio, "sleep", fake_sleep)  # the backoff is asserted, not waited out
    yield slept


async def test_a_409_conflict_in_progress_is_retried_and_then_written(sleeps: list[float]) -> None:
    s3 = StubS3([client_error("ConditionalRequestConflict", 409, "PutObject")] * 2)

    stored, created = await _ledger.put_once(s3, "b", "k", DOC, drift_code="PLAN_DRIFT")

    assert (stored, created) == (DOC, True)
    assert s3.puts == 3 and s3.stored == DOC
    assert len(sleeps) == 2 and all(0 < s <= _ledger._MAX_DELAY for s in sleeps)


async def test_a_409_whose_conflicting_write_lands_is_then_compared_like_any_existing_object() -> None:
    other = json.dumps({"scenario_run_id": "s2"}).encode()

    class LandsAfterConflict(StubS3):
        async def put_object(self, **kw: Any) -> dict[str, Any]:
            if self.puts == 0:
                self.puts += 1
                self.stored = other  # the other writer's PUT completes while we back off
                raise client_error("ConditionalRequestConflict", 409, "PutObject")
            return await super().put_object(**kw)

    with pytest.raises(LedgerDrift) as drift:
        await _ledger.put_once(LandsAfterConflict([]), "b", "k", DOC, drift_code="PLAN_DRIFT")
    assert drift.value.code == "PLAN_DRIFT" and "different content" in drift.value.message


async def test_409_that_never_clears_fails_after_bounded_attempts(sleeps: list[float]) -> None:
    s3 = StubS3([client_error("ConditionalRequestConflict", 409, "PutObject")] * 100)

    with pytest.raises(ClientError) as failed:
        await _ledger.put_once(s3, "b", "k", DOC, drift_code="PLAN_DRIFT")

    assert failed.value.response["Error"]["Code"] == "ConditionalRequestConflict"
    assert s3.puts == _ledger.PUT_ATTEMPTS and len(sleeps) == _ledger.PUT_ATTEMPTS - 1
    assert sum(sleeps) < 10  # bounded: an operator gets an answer in seconds


async def test_412_means_it_exists_equal_content_is_returned_as_stored_not_created(sleeps: list[float]) -> None:
    first = json.dumps({"scenario_run_id": "s1", "created_at_utc": "2025-12-31T00:00:00.000000Z"}).encode()

    class RacedByAnEqualWriter(StubS3):
        async def get_object(self, **kw: Any) -> dict[str, Any]:
            if self.gets == 0:  # our first look finds nothing; the other writer wins the PUT
                self.gets += 1
                self.stored = first
                raise client_error("NoSuchKey", 404, "GetObject")
            return await super().get_object(**kw)

    s3 = RacedByAnEqualWriter([])
    stored, created = await _ledger.put_once(s3, "b", "k", DOC, drift_code="PLAN_DRIFT")
    # Timestamps are volatile: the first writer's bytes are kept, and nothing was retried.
    assert (stored, created) == (first, False) and s3.puts == 1 and sleeps == []


async def test_a_permanent_put_error_is_not_retried(sleeps: list[float]) -> None:
    s3 = StubS3([client_error("InvalidArgument", 400, "PutObject")])
    with pytest.raises(ClientError):
        await _ledger.put_once(s3, "b", "k", DOC, drift_code="PLAN_DRIFT")
    assert s3.puts == 1 and sleeps == []
