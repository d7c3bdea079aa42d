"""The governance log: append-only, deduplicated events of a platform run, in the object store.

Storage (bucket `settings.buckets.platform`, prefix `<platform_run_id>/obs/governance/`):

- `events/<event_id>.json`: one object per event, written create-only (`If-None-Match: *` after a
  HEAD, so even a server that ignored the condition is not asked to overwrite). The id is
  `governance_event_id(family, run, scenario run, component, dedupe_key or details)`, so emitting
  the same fact twice, from any process, is a no-op. These objects are the authority.
- `events.jsonl`: the compacted projection, one compact JSON line per event in (ts_utc, event_id)
  order. Writers never touch it: a compactor rewrites it now and then (not once per event) from
  the event objects. It is a pure function of the event set, events are never removed, and each
  compaction starts from the union of what it lists and what the current projection holds, so
  concurrent compactors cannot lose a line for good: the next compaction always restores a
  superset. With a server that honours `If-Match`, a compaction that lost a race retries.

The reference appended to one growing object with a read-modify-write per event (O(n^2) bytes,
`S3_APPEND_CONFLICT` under concurrent writers, lines lost for good when the append failed after the
event object was written); here nothing is appended and nothing depends on a second write.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
from botocore.exceptions import ClientError

from fraudrt.config import Settings
from fraudrt.contracts import governance_event_id, is_platform_run_id, is_ts_utc, utc_now_ts
from fraudrt.substrate import s3_client

FAMILIES: Final[tuple[str, ...]] = (
    "RUN_STARTED",
    "RUN_READY_SEEN",
    "PACK_STARTED",
    "PACK_STOPPED",
    "POLICY_BUNDLE_ACTIVATED",
    "RUN_REPORT_GENERATED",
    "RUN_COMPLETED",
    "ANOMALY",
    "LABEL_CORRECTION",
    "CONFORMANCE_RESULT",
)
SourceType = Literal["SYSTEM", "HUMAN"]
_PRECONDITION: Final = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_NOT_FOUND: Final = frozenset({"NoSuchKey", "404", "NotFound"})


class GovernanceError(ValueError):
    """An event that cannot be recorded as given (unknown family, bad run id, no details)."""


class Actor(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    actor_id: str
    source_type: SourceType
    source_component: str


class GovernanceEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    event_id: str
    event_family: str
    ts_utc: str
    platform_run_id: str
    scenario_run_id: str | None = None
    actor: Actor
    dedupe_key: str | None = None
    details: dict[str, Any]


_ENCODE: Final = msgspec.json.Encoder(order="sorted")
_DECODE: Final = msgspec.json.Decoder(GovernanceEvent)


def governance_prefix(platform_run_id: str) -> str:
    return f"{platform_run_id}/obs/governance/"


def event_key(platform_run_id: str, event_id: str) -> str:
    return f"{governance_prefix(platform_run_id)}events/{event_id}.json"


def projection_key(platform_run_id: str) -> str:
    return f"{governance_prefix(platform_run_id)}events.jsonl"


def make_event(platform_run_id: str, family: str, *, source_component: str, details: Mapping[str, Any],
               dedupe_key: str | None = None, actor_id: str | None = None, source_type: SourceType = "SYSTEM",
               scenario_run_id: str | None = None, ts_utc: str | None = None) -> GovernanceEvent:
    """The event as it will be stored; validates what the log relies on (family, run id, ts form)."""
    fam = family.upper()
    if fam not in FAMILIES:
        raise GovernanceError(f"unknown governance event family {family!r}; known: {', '.join(FAMILIES)}")
    if not is_platform_run_id(platform_run_id):
        raise GovernanceError(f"not a platform_run_id: {platform_run_id!r}")
    if not source_component:
        raise GovernanceError("source_component is required")
    ts = ts_utc or utc_now_ts()
    # One timestamp form in the log (the reference mixed `Z` and `+00:00`, then compared strings).
    if not is_ts_utc(ts):
        raise GovernanceError(f"ts_utc must be RFC 3339 UTC with 6 fractional digits and Z: {ts!r}")
    body = json.loads(json.dumps(dict(details), default=str))
    event_id = governance_event_id(fam, platform_run_id, scenario_run_id, source_component,
                                   dedupe_key=dedupe_key, details=body)
    return GovernanceEvent(event_id=event_id, event_family=fam, ts_utc=ts, platform_run_id=platform_run_id,
                           scenario_run_id=scenario_run_id, dedupe_key=dedupe_key, details=body,
                           actor=Actor(actor_id=actor_id or f"SYSTEM::{source_component}", source_type=source_type,
                                       source_component=source_component))


def _code(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return str(err.get("Code") or status)


async def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        await s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _code(exc) in _NOT_FOUND:
            return False
        raise
    return True


async def write_event(s3: Any, bucket: str, event: GovernanceEvent) -> bool:
    """Store `event` unless an event with its id exists; True if this call created it."""
    key = event_key(event.platform_run_id, event.event_id)
    if await _exists(s3, bucket, key):
        return False
    try:
        await s3.put_object(Bucket=bucket, Key=key, Body=_ENCODE.encode(event), IfNoneMatch="*",
                            ContentType="application/json")
    except ClientError as exc:
        if _code(exc) in _PRECONDITION:
            return False
        raise
    return True


@asynccontextmanager
async def _client(settings: Settings, s3: Any | None) -> AsyncIterator[Any]:
    if s3 is not None:
        yield s3
        return
    async with s3_client(settings.s3, max_attempts=3, connect_timeout=10.0, read_timeout=30.0) as own:
        yield own


async def record(settings: Settings, platform_run_id: str, family: str, *, source_component: str,
                 details: Mapping[str, Any], dedupe_key: str | None = None, actor_id: str | None = None,
                 source_type: SourceType = "SYSTEM", scenario_run_id: str | None = None,
                 s3: Any | None = None) -> GovernanceEvent | None:
    """Record one governance event; returns it when new, None when that fact was already recorded.

    Give a `dedupe_key` for facts that can be observed more than once (a READY's message id, a
    pack's pid); without one, the details themselves are the key. Pass an open `s3` client on
    repeated calls; otherwise one is opened for the call.
    """
    event = make_event(platform_run_id, family, source_component=source_component, details=details,
                       dedupe_key=dedupe_key, actor_id=actor_id, source_type=source_type,
                       scenario_run_id=scenario_run_id)
    async with _client(settings, s3) as client:
        created = await write_event(client, settings.buckets.platform, event)
    return event if created else None


# ------------------------------------------------------------------------------ reading, compaction


def _sort_key(event: GovernanceEvent) -> tuple[str, str]:
    return event.ts_utc, event.event_id


async def _get(s3: Any, bucket: str, key: str) -> tuple[bytes, str | None] | None:
    try:
        resp = await s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _code(exc) in _NOT_FOUND:
            return None
        raise
    async with resp["Body"] as body:
        data: bytes = await body.read()
    return data, resp.get("ETag")


@dataclass
class GovernanceView:
    """The events of one run as far as this reader has seen them; `refresh` reads only what is new
    (event objects it has not read yet), so a long-lived compactor costs one listing per round."""

    settings: Settings
    platform_run_id: str
    events: dict[str, GovernanceEvent] = field(default_factory=dict)
    projected: frozenset[str] = frozenset()
    projection_etag: str | None = None
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        return self.settings.buckets.platform

    async def _read_projection(self, s3: Any) -> None:
        got = await _get(s3, self.bucket, projection_key(self.platform_run_id))
        if got is None:
            self.projected, self.projection_etag = frozenset(), None
            return
        data, etag = got
        ids: set[str] = set()
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                event = _DECODE.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.unreadable[f"events.jsonl:{len(ids)}"] = str(exc)
                continue
            self.events.setdefault(event.event_id, event)
            ids.add(event.event_id)
        self.projected, self.projection_etag = frozenset(ids), etag

    async def refresh(self, s3: Any) -> int:
        """Read the projection and every event object not read yet; returns how many are new."""
        before = len(self.events)
        await self._read_projection(s3)
        prefix = governance_prefix(self.platform_run_id) + "events/"
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                event_id = obj["Key"][len(prefix):].removesuffix(".json")
                if event_id in self.events:
                    continue
                got = await _get(s3, self.bucket, obj["Key"])
                if got is None:
                    continue
                try:
                    self.events[event_id] = _DECODE.decode(got[0])
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.unreadable[obj["Key"]] = str(exc)
        return len(self.events) - before

    def ordered(self, family: str | None = None) -> list[GovernanceEvent]:
        fam = family.upper() if family else None
        return sorted((e for e in self.events.values() if fam is None or e.event_family == fam), key=_sort_key)

    def jsonl(self) -> bytes:
        return b"".join(_ENCODE.encode(e) + b"\n" for e in self.ordered())

    async def compact(self, s3: Any, *, attempts: int = 5) -> bool:
        """Rewrite `events.jsonl` if it lacks an event; True if it was written."""
        for _ in range(attempts):
            await self.refresh(s3)
            if self.projected == frozenset(self.events):
                return False
            cond = {"IfMatch": self.projection_etag} if self.projection_etag else {"IfNoneMatch": "*"}
            try:
                await s3.put_object(Bucket=self.bucket, Key=projection_key(self.platform_run_id), Body=self.jsonl(),
                                    ContentType="application/x-ndjson", **cond)
            except ClientError as exc:
                if _code(exc) in _PRECONDITION:
                    continue  # another compactor wrote first: read its projection and go again
                raise
            self.projected = frozenset(self.events)
            return True
        return False


async def query(settings: Settings, platform_run_id: str, *, limit: int = 0, family: str | None = None,
                s3: Any | None = None) -> list[GovernanceEvent]:
    """The run's events in (ts_utc, event_id) order, the last `limit` of them when `limit` > 0.
    Reads the projection and any event not compacted yet, so a query never misses a recorded event."""
    view = GovernanceView(settings, platform_run_id)
    async with _client(settings, s3) as client:
        await view.refresh(client)
    events = view.ordered(family)
    return events[-limit:] if limit > 0 else events


async def read_projection(settings: Settings, platform_run_id: str, s3: Any | None = None) -> list[GovernanceEvent]:
    """The events `events.jsonl` holds now (not those still waiting for a compaction)."""
    async with _client(settings, s3) as client:
        got = await _get(client, settings.buckets.platform, projection_key(platform_run_id))
    return [] if got is None else [_DECODE.decode(line) for line in got[0].splitlines() if line.strip()]


def event_to_dict(event: GovernanceEvent) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out
