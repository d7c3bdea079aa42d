"""Write-once objects in S3: conditional PUT (`If-None-Match: *`), and compare on conflict.

A HEAD/GET comes first because an S3 server that ignores `If-None-Match` would otherwise overwrite
(critique §13.2 #14); the conditional PUT still closes the race between two writers. Equal content
(ignoring `LEDGER_VOLATILE_FIELDS`) returns the stored bytes, so a re-run keeps the first timestamps.

Only 412 `PreconditionFailed` means "the object exists". S3 answers 409 `ConditionalRequestConflict`
while a conflicting write to the key is still in progress: the outcome is not known yet, so the
write is retried (as is any failure `fraudrt.runtime.classify` calls transient) with a bounded,
jittered backoff; the retry then finds the object (412, compare) or writes it.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any, Final

import anyio
from botocore.exceptions import ClientError

from fraudrt.runtime import classify

from ._errors import LedgerDrift
from ._messages import LEDGER_VOLATILE_FIELDS

_EXISTS_CODES: Final = frozenset({"PreconditionFailed", "412"})
PUT_ATTEMPTS: Final = 6
_BASE_DELAY: Final = 0.2
_MAX_DELAY: Final = 3.0
log = logging.getLogger("fraudrt.scenario_runner")


def _semantic(data: bytes) -> Any:
    doc = json.loads(data)
    if isinstance(doc, dict):
        return {k: v for k, v in doc.items() if k not in LEDGER_VOLATILE_FIELDS}
    return doc


async def get_object_or_none(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        resp = await s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    async with resp["Body"] as body:
        data: bytes = await body.read()
    return data


def _exists(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code in _EXISTS_CODES or status == "412"


async def put_once(s3: Any, bucket: str, key: str, data: bytes, *, drift_code: str) -> tuple[bytes, bool]:
    """Store `data` at `key` unless present; returns (stored bytes, created now).

    Raises `LedgerDrift(drift_code)` when the key holds different content, and the last error when
    transient failures (a 409 conflict in progress, 5xx, throttling, an outage) outlast
    `PUT_ATTEMPTS` tries.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await _put_once(s3, bucket, key, data, drift_code=drift_code)
        except Exception as exc:
            if isinstance(exc, LedgerDrift) or not classify(exc).transient or attempt >= PUT_ATTEMPTS:
                raise
            delay = random.uniform(0.5, 1.0) * min(_MAX_DELAY, _BASE_DELAY * 2 ** (attempt - 1))
            log.warning("SR: ledger write s3://%s/%s attempt %d/%d failed (%s: %s); retrying in %.2fs", bucket,
                        key, attempt, PUT_ATTEMPTS, type(exc).__name__, exc, delay)
            await anyio.sleep(delay)


async def _put_once(s3: Any, bucket: str, key: str, data: bytes, *, drift_code: str) -> tuple[bytes, bool]:
    existing = await get_object_or_none(s3, bucket, key)
    if existing is None:
        try:
            await s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*",
                                ContentType="application/json")
            return data, True
        except ClientError as exc:
            if not _exists(exc):
                raise
        existing = await get_object_or_none(s3, bucket, key)
        if existing is None:  # deleted between the conflict and the read: not ours to paper over
            raise LedgerDrift(drift_code, f"s3://{bucket}/{key} conflicted and then vanished")
    if _semantic(existing) != _semantic(data):
        raise LedgerDrift(drift_code, f"s3://{bucket}/{key} already holds different content; "
                                      "a new run equivalence key is needed for a different run")
    return existing, False
