"""Evidence objects in S3: receipts (per event, or one object per admitted batch) and quarantine records.

Keys (bucket `settings.buckets.platform`):
  <platform_run_id>/ig/receipts/<receipt_id>.json           receipts_layout per_event
  <platform_run_id>/ig/receipts/batches/<batch_id>.json     receipts_layout batch
  <platform_run_id>/ig/quarantine/<quarantine_id>.json      always (never holds the payload)

Every object's content is a function of the decision it records, so re-writing one after a retry
or a heal replaces it with the same (or the healed, final) content: writes are idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from ._errors import DependencyDown, dependency_down
from ._s3put import LeanS3Put

_ENCODER: Final = msgspec.json.Encoder()


def receipt_key(platform_run_id: str, receipt_id: str) -> str:
    return f"{platform_run_id}/ig/receipts/{receipt_id}.json"


def batch_key(platform_run_id: str, batch_id: str) -> str:
    return f"{platform_run_id}/ig/receipts/batches/{batch_id}.json"


def quarantine_key(platform_run_id: str, quarantine_id: str) -> str:
    return f"{platform_run_id}/ig/quarantine/{quarantine_id}.json"


class ObjectWriter:
    """PUTs many small objects concurrently, at most `concurrency` in flight (the S3 client's pool size).

    `s3` is an aiobotocore client (used for the probe, and for PUTs unless `lean` is given); `lean` is
    the fast PUT path (`LeanS3Put`) where the profile allows it.
    """

    def __init__(self, s3: Any, bucket: str, *, concurrency: int = 64, lean: LeanS3Put | None = None) -> None:
        self.s3 = s3
        self.lean = lean
        self.bucket = bucket
        self.concurrency = concurrency
        self.puts_total = 0
        self.failures_total = 0
        self.consecutive_failures = 0

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def _put(self, key: str, body: bytes) -> None:
        await self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")

    async def put_many(self, objects: Sequence[tuple[str, Any]]) -> None:
        """Encode and PUT every (key, Struct) pair; any failure raises `DependencyDown("object_store")`."""
        if not objects:
            return
        bodies = [(key, _ENCODER.encode(obj)) for key, obj in objects]
        results: Sequence[BaseException | None]
        if self.lean is not None:
            results = await self.lean.put_many(self.bucket, bodies)
        else:
            sem = asyncio.Semaphore(self.concurrency)

            async def one(key: str, body: bytes) -> None:
                async with sem:
                    await self._put(key, body)

            results = await asyncio.gather(*(one(k, b) for k, b in bodies), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        self.puts_total += len(bodies) - len(errors)
        if errors:
            self.failures_total += len(errors)
            self.consecutive_failures += 1
            first = errors[0]
            if isinstance(first, asyncio.CancelledError):
                raise first
            down = dependency_down("object_store", first)
            if down is None:  # not the store's state: a bug in the request IG built
                raise first
            raise DependencyDown("object_store", f"{len(errors)}/{len(bodies)} object write(s) failed: {down.detail}",
                                 retry_after=down.retry_after) from first
        self.consecutive_failures = 0

    async def ping(self) -> None:
        """HeadBucket; any failure means the store cannot take receipts now (the probe's verdict)."""
        try:
            await self.s3.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            down = dependency_down("object_store", exc)
            raise down or DependencyDown("object_store", f"{type(exc).__name__}: {exc}") from exc
