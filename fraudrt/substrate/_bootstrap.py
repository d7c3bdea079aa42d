"""Create the seed's buckets and streams idempotently, and wait until every stream is ACTIVE."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from fraudrt.config import Settings

from ._clients import kinesis_client, s3_client
from ._errors import SubstrateError


async def ensure_bucket(s3: Any, bucket: str) -> bool:
    """Create `bucket` unless it exists; True when created."""
    try:
        await s3.head_bucket(Bucket=bucket)
        return False
    except ClientError:
        pass
    try:
        await s3.create_bucket(Bucket=bucket)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise


async def ensure_stream(kinesis: Any, stream: str, shards: int) -> bool:
    """Create `stream` unless it exists; True when created."""
    try:
        await kinesis.create_stream(StreamName=stream, ShardCount=shards)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceInUseException":
            return False
        raise


async def wait_active(kinesis: Any, streams: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    pending = set(streams)
    while pending:
        for stream in sorted(pending):
            summary = await kinesis.describe_stream_summary(StreamName=stream)
            if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                pending.discard(stream)
        if pending:
            if time.monotonic() > deadline:
                raise SubstrateError(f"streams not ACTIVE after {timeout:.0f}s: {sorted(pending)}")
            await asyncio.sleep(0.1)


async def bootstrap(settings: Settings, *, shards: int | None = None, extra_streams: list[str] | None = None,
                    progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Buckets `oracle-store` + `fraud-platform` and every seed stream; safe to run again."""
    shard_count = shards or settings.kinesis.shard_count
    streams = settings.streams.all_names() + list(extra_streams or [])
    created: dict[str, list[str]] = {"buckets": [], "streams": []}
    async with s3_client(settings.s3) as s3:
        for bucket in (settings.buckets.oracle, settings.buckets.platform):
            if await ensure_bucket(s3, bucket):
                created["buckets"].append(bucket)
            progress(f"bucket {bucket}: ok")
    async with kinesis_client(settings.kinesis) as kinesis:
        for stream in streams:
            if await ensure_stream(kinesis, stream, shard_count):
                created["streams"].append(stream)
        await wait_active(kinesis, streams)
        progress(f"{len(streams)} streams ACTIVE ({shard_count} shard(s) each when created)")
    return {"created": created, "buckets": [settings.buckets.oracle, settings.buckets.platform],
            "streams": streams}
