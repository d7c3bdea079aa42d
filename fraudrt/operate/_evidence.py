"""Evidence read straight from the substrate: what the bus and the object store really hold for a run."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from fraudrt.config import Settings
from fraudrt.runtime.bus import KinesisBus
from fraudrt.substrate import s3_client


class _Peek(msgspec.Struct):
    event_id: str | None = None
    event_type: str | None = None
    platform_run_id: str | None = None


_peek = msgspec.json.Decoder(_Peek)


def in_scope_streams(settings: Settings, mode: str) -> list[str]:
    """Traffic and context streams of a mode (the outputs WSP streams, as IG routes them)."""
    names = ["arrival_events", "arrival_entities"]
    names += ["traffic_fraud", "flow_anchor_fraud"] if mode == "fraud" else ["traffic_baseline", "flow_anchor_baseline"]
    return [settings.streams.name(n) for n in names]


async def bus_events_by_type(settings: Settings, streams: list[str], platform_run_id: str) -> dict[str, Any]:
    """Per event type: distinct event ids of the run on the bus, and records (duplicates included)."""
    distinct: dict[str, set[str]] = {}
    records: Counter[str] = Counter()
    async with KinesisBus(settings.kinesis) as bus:
        for stream in streams:
            for shard in await bus.list_shards(stream):
                iterator: str | None = await bus.get_shard_iterator(stream, shard)
                while iterator:
                    got = await bus.get_records(stream, shard, iterator)
                    for r in got.records:
                        try:
                            peek = _peek.decode(r.data)
                        except (msgspec.DecodeError, msgspec.ValidationError):
                            continue
                        if peek.platform_run_id == platform_run_id and peek.event_type and peek.event_id:
                            distinct.setdefault(peek.event_type, set()).add(peek.event_id)
                            records[peek.event_type] += 1
                    if not got.records and got.millis_behind == 0:
                        break
                    iterator = got.next_iterator
    return {t: {"distinct": len(ids), "records": records[t]} for t, ids in distinct.items()}


async def count_objects(settings: Settings, bucket: str, prefix: str) -> int:
    total = 0
    async with s3_client(settings.s3) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            total += len(page.get("Contents", []))
    return total
