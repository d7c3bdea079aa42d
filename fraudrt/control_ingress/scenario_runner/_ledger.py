"""Write-once objects in S3: conditional PUT (`If-None-Match: *`), and compare on conflict.

A HEAD/GET comes first because an S3 server that ignores `If-None-Match` would otherwise overwrite
(critique §13.2 #14); the conditional PUT still closes the race between two writers. Equal content
(ignoring `LEDGER_VOLATILE_FIELDS`) returns the stored bytes, so a re-run keeps the first timestamps.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from ._errors import LedgerDrift
from ._messages import LEDGER_VOLATILE_FIELDS

_PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


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


async def put_once(s3: Any, bucket: str, key: str, data: bytes, *, drift_code: str) -> tuple[bytes, bool]:
    """Store `data` at `key` unless present; returns (stored bytes, created now).

    Raises `LedgerDrift(drift_code)` when the key holds different content.
    """
    existing = await get_object_or_none(s3, bucket, key)
    created = False
    if existing is None:
        try:
            await s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*",
                                ContentType="application/json")
            return data, True
        except ClientError as exc:
            err = exc.response.get("Error", {})
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if err.get("Code") not in _PRECONDITION_CODES and status not in ("412", "409"):
                raise
        existing = await get_object_or_none(s3, bucket, key)
        if existing is None:  # deleted between the conflict and the read: not ours to paper over
            raise LedgerDrift(drift_code, f"s3://{bucket}/{key} conflicted and then vanished")
    if _semantic(existing) != _semantic(data):
        raise LedgerDrift(drift_code, f"s3://{bucket}/{key} already holds different content; "
                                      "a new run equivalence key is needed for a different run")
    return existing, created
