"""OnlineFeaturePlane: joins each flow's AUTH_REQUEST with its flow anchor and aggregates it in event time.

A flow is *joined* once both halves are taken in (whichever comes second; the waiting half is a
row of `ofp_flows`). A joined flow is *aggregated* (its vector computed from the buckets, then the
flow folded in: `_kernel`) once the event-time watermark W has reached its ts, where W is the
smallest watermark over every shard of the traffic and flow anchor streams (each stream is in
event-time order per shard). Then every event before the flow has been taken in, and flows are
aggregated in (ts, flow_id) order, so the vector depends only on the world's events, never on how
the streams interleaved. With one shard per stream a flow is aggregated in the batch that joins it.

The buckets live in memory; `ofp_flows` is their changelog. In-memory state changes during
`handle`, so a batch that fails (rolled back) leaves it dirty, and the next batch restores it from
Postgres first; a start does the same.
"""

from __future__ import annotations

import heapq
import struct
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Final, NamedTuple

import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import format_ts_utc
from fraudrt.rtdl._inputs import (
    AUTH_REQUEST,
    FLOW_ANCHOR_EVENT_TYPES,
    TRAFFIC_EVENT_TYPES,
    event_type_of,
    flow_anchor_decoder,
    flow_anchor_stream,
    traffic_decoder,
    traffic_stream,
)
from fraudrt.runtime import Actor, Batch, ComponentContext, Findings, InboundRecord
from fraudrt.substrate import kinesis_client

from . import _store
from ._definitions import FeatureDefinitions, load_definitions
from ._kernel import FeatureKernel

# Operator thresholds (seconds, processing time). A half normally meets its partner within a batch
# or two; one waiting a minute means the other stream is stalled or its context is missing.
WAIT_AMBER_S: Final = 60.0
WAIT_RED_S: Final = 600.0
# Records applied this long after they reached the bus: decisions wait on OFP by that much.
LAG_AMBER_MS: Final = 5_000
LAG_RED_MS: Final = 60_000
# A lag measured by a batch this long ago says nothing any more (an idle stream is caught up).
LAG_FRESH_S: Final = 10.0
DEAD_LETTERS_RED: Final = 100
# Out-of-order input breaks the as-of guarantee for the flows it touches: flagged while recent.
INEXACT_RECENT_S: Final = 600.0

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US: Final = 86_400_000_000
_days: dict[str, int] = {}


def ts_us(value: str) -> int:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` as µs since the epoch (ValueError otherwise); ~0.5 µs."""
    if len(value) != 27 or value[26] != "Z" or value[10] != "T" or value[19] != ".":
        raise ValueError(f"not a ts_utc: {value!r}")
    day = _days.get(value[:10])
    if day is None:
        day = _days[value[:10]] = (date.fromisoformat(value[:10]).toordinal() - 719163) * _DAY_US
    h, m, s = int(value[11:13]), int(value[14:16]), int(value[17:19])
    if not (h < 24 and m < 60 and s < 60) or value[13] != ":" or value[16] != ":":
        raise ValueError(f"not a ts_utc: {value!r}")
    return day + ((h * 60 + m) * 60 + s) * 1_000_000 + int(value[20:26])


def format_us(us: int) -> str:
    return format_ts_utc(_EPOCH + timedelta(microseconds=us))


class _Request(NamedTuple):
    ts_us: int
    amount_minor: int
    event_id: str
    taken_at: float


class _Anchor(NamedTuple):
    entities: tuple[int, ...]  # ENTITY_FIELDS order
    ts_us: int
    event_id: str
    taken_at: float


class _Joined(NamedTuple):
    ts_us: int
    flow_id: int
    request: _Request
    anchor: _Anchor


def _flow_row(flow_id: int, req: _Request | None, anc: _Anchor | None, vector: bytes | None = None,
              exact: bool | None = None, digest: str | None = None) -> _store.FlowRow:
    ents: tuple[Any, ...] = anc.entities if anc else (None,) * 6
    return (str(flow_id),
            req.event_id if req else None, str(req.ts_us) if req else None, str(req.amount_minor) if req else None,
            anc.event_id if anc else None, str(anc.ts_us) if anc else None,
            *(None if e is None else str(e) for e in ents),
            None if vector is None else "\\x" + vector.hex(),
            None if exact is None else ("true" if exact else "false"), digest)


class OnlineFeaturePlane(Actor):
    name: ClassVar[str] = "online_feature_plane"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.rtdl.online_feature_plane",)
    max_batch: ClassVar[int] = 10000

    def __init__(self, definitions: FeatureDefinitions | None = None) -> None:
        self._defs_given = definitions
        self.definitions: FeatureDefinitions | None = definitions
        self._traffic = self._anchor = ""
        self._shards: list[tuple[str, str]] = []
        self._run = ""
        self._dirty = True
        self._reset()
        self.flows_aggregated = self.flows_inexact = self.dead_letters = 0
        self.duplicates = self.mismatches = 0
        self.restores = 0
        self.lag_ms = 0
        self.lag_at = 0.0
        self.last_inexact_at = 0.0

    def _reset(self) -> None:
        self._kernel = FeatureKernel(self.definitions) if self.definitions else None
        self._pack = struct.Struct(f"<{self.definitions.width}q").pack if self.definitions else None
        self._requests: dict[int, _Request] = {}
        self._anchors: dict[int, _Anchor] = {}
        self._joined: list[_Joined] = []  # heap by (ts, flow_id): joined, waiting for the watermark
        self._joined_ids: set[int] = set()
        self._watermarks: dict[tuple[str, str], int] = {}
        self._release_wm: int | None = None

    # ------------------------------------------------------------------------------- lifecycle

    def subscriptions(self, settings: Settings) -> list[str]:
        return [traffic_stream(settings), flow_anchor_stream(settings)]

    async def start(self, ctx: ComponentContext) -> None:
        path = ctx.options.get("features")
        self.definitions = self._defs_given or load_definitions(Path(path) if path else None)
        self._traffic, self._anchor = self.subscriptions(ctx.settings)
        self._run = ctx.platform_run_id
        # The watermark is the minimum over *every* shard, including those not heard from yet.
        async with kinesis_client(ctx.settings.kinesis) as kinesis:
            self._shards = []
            for stream in (self._traffic, self._anchor):
                resp = await kinesis.list_shards(StreamName=stream)
                self._shards += [(stream, s["ShardId"]) for s in resp["Shards"]]
        async with ctx.pool.acquire() as conn, conn.transaction():
            await _store.record_definitions(conn, self.definitions)
            await self._restore(conn)

    async def _restore(self, conn: Any) -> None:
        """Rebuild the in-memory state from Postgres (start, or after a batch that was rolled back)."""
        assert self.definitions is not None
        self.restores += 1
        self._reset()
        progress, self._watermarks = await _store.load_progress(conn, self._run)
        if progress is not None:
            self.flows_aggregated = progress["flows_aggregated"]
            self.flows_inexact = progress["flows_inexact"]
            self.dead_letters = progress["dead_letters"]
            self._release_wm = progress["release_watermark_us"]
        longest = self.definitions.windows[-1][1] * 1_000_000 + self.definitions.bucket_us
        since = (self._release_wm or 0) - longest
        kernel = self._kernel
        assert kernel is not None
        now = time.time()
        for row in await _store.load_flows(conn, self._run, since):
            fid = row["flow_id"]
            req = (_Request(row["ts_us"], row["amount_minor"], row["request_event_id"], now)
                   if row["request_event_id"] is not None else None)
            anc = (_Anchor((int(row["merchant_id"]), row["party_id"], row["account_id"], row["instrument_id"],
                            row["device_id"], row["ip_id"]), row["anchor_ts_us"], row["anchor_event_id"], now)
                   if row["anchor_event_id"] is not None else None)
            if row["aggregated"]:
                assert req is not None and anc is not None
                kernel.apply(req.ts_us, req.amount_minor, anc.entities)
            elif req is not None and anc is not None:
                self._join(_Joined(req.ts_us, fid, req, anc))
            elif req is not None:
                self._requests[fid] = req
            elif anc is not None:
                self._anchors[fid] = anc
        kernel.late_events = 0
        self._dirty = False

    # ------------------------------------------------------------------------------- batches

    async def handle(self, batch: Batch) -> None:
        if self._dirty:
            await self._restore(batch.conn)
        self._dirty = True
        now = time.time()
        requests: list[tuple[InboundRecord, int, int, float]] = []  # record, flow, ts, amount
        anchors: list[tuple[InboundRecord, Any, int]] = []
        dead_before = len(batch.rejected)
        marks = self._watermarks
        touched_marks: dict[tuple[str, str], int] = {}
        newest_arrival = 0.0
        for r in batch.records:
            newest_arrival = max(newest_arrival, r.arrival_ts)
            try:
                if r.stream == self._traffic:
                    ev = traffic_decoder.decode(r.data)
                    if ev.event_type not in TRAFFIC_EVENT_TYPES:
                        batch.dead_letter(r, f"UNEXPECTED_EVENT_TYPE: {ev.event_type} on the traffic stream")
                        continue
                    t = ts_us(ev.payload.ts_utc)
                    if ev.payload.event_type == AUTH_REQUEST:
                        requests.append((r, ev.payload.flow_id, t, ev.payload.amount))
                elif r.stream == self._anchor:
                    fa = flow_anchor_decoder.decode(r.data)
                    if fa.event_type not in FLOW_ANCHOR_EVENT_TYPES:
                        batch.dead_letter(r, f"UNEXPECTED_EVENT_TYPE: {fa.event_type} on the flow anchor stream")
                        continue
                    t = ts_us(fa.payload.ts_utc)
                    anchors.append((r, fa.payload, t))
                else:
                    batch.dead_letter(r, f"UNEXPECTED_STREAM: {r.stream}")
                    continue
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                kind = event_type_of(r.data)
                expected = TRAFFIC_EVENT_TYPES if r.stream == self._traffic else FLOW_ANCHOR_EVENT_TYPES
                if kind is not None and kind not in expected:
                    batch.dead_letter(r, f"UNEXPECTED_EVENT_TYPE: {kind} on {r.stream}")
                else:
                    batch.dead_letter(r, f"INVALID_EVENT: {str(exc)[:500]}")
                continue
            key = (r.stream, r.shard_id)
            if t > marks.get(key, -1):
                marks[key] = touched_marks[key] = t
        if newest_arrival:
            self.lag_ms, self.lag_at = int(max(0.0, now - newest_arrival) * 1000), now

        new = {id(r) for r in await batch.take_in([x[0] for x in requests] + [x[0] for x in anchors])}
        touched: set[int] = set()
        for r, fid, t, amount in requests:
            if id(r) not in new:
                continue
            if fid in self._requests or fid in self._joined_ids:
                batch.dead_letter(r, f"DUPLICATE_FLOW_REQUEST: flow {fid} already has an AUTH_REQUEST")
                continue
            req = _Request(t, round(amount * 100), r.event_id or "", now)
            partner = self._anchors.pop(fid, None)
            if partner is None:
                self._requests[fid] = req
            else:
                self._join(_Joined(t, fid, req, partner))
            touched.add(fid)
        for r, p, t in anchors:
            if id(r) not in new:
                continue
            fid = p.flow_id
            if fid in self._anchors or fid in self._joined_ids:
                batch.dead_letter(r, f"DUPLICATE_FLOW_ANCHOR: flow {fid} already has a flow anchor")
                continue
            anchor = _Anchor((p.merchant_id, p.party_id, p.account_id, p.instrument_id, p.device_id, p.ip_id), t,
                             r.event_id or "", now)
            waiting = self._requests.pop(fid, None)
            if waiting is None:
                self._anchors[fid] = anchor
            else:
                self._join(_Joined(waiting.ts_us, fid, waiting, anchor))
            touched.add(fid)

        released, inexact = self._release()
        rows = self._rows(touched, released)
        await _store.upsert_flows(batch.conn, self._run, rows)
        dead = len(batch.rejected) - dead_before
        await _store.save_progress(batch.conn, self._run, watermarks=touched_marks, aggregated=len(released),
                                   inexact=inexact, dead_letters=dead, release_watermark_us=self._release_wm)
        batch.notes["ofp"] = (len(released), inexact, dead)

    def _join(self, joined: _Joined) -> None:
        heapq.heappush(self._joined, joined)
        self._joined_ids.add(joined.flow_id)

    def _release(self) -> tuple[list[tuple[_Joined, bytes, bool]], int]:
        """Aggregate every joined flow the watermark has reached, in (ts, flow_id) order."""
        marks = self._watermarks
        if len(marks) < len(self._shards) or any(s not in marks for s in self._shards):
            return [], 0
        w = min(marks[s] for s in self._shards)
        if self._release_wm is None or w > self._release_wm:
            self._release_wm = w
        kernel, pack, heap = self._kernel, self._pack, self._joined
        assert kernel is not None and pack is not None
        out: list[tuple[_Joined, bytes, bool]] = []
        inexact = 0
        while heap and heap[0].ts_us <= w:
            j = heapq.heappop(heap)
            self._joined_ids.discard(j.flow_id)
            values, exact = kernel.apply(j.ts_us, j.request.amount_minor, j.anchor.entities)
            inexact += not exact
            out.append((j, pack(*values), exact))
        return out, inexact

    def _rows(self, touched: set[int], released: list[tuple[_Joined, bytes, bool]]) -> list[_store.FlowRow]:
        assert self.definitions is not None
        digest = self.definitions.digest
        rows = [_flow_row(j.flow_id, j.request, j.anchor, vector, exact, digest) for j, vector, exact in released]
        done = {j.flow_id for j, _, _ in released}
        waiting = {j.flow_id: j for j in self._joined if j.flow_id in touched}
        for fid in touched - done:
            j = waiting.get(fid)
            if j is not None:
                rows.append(_flow_row(fid, j.request, j.anchor))
            else:
                rows.append(_flow_row(fid, self._requests.get(fid), self._anchors.get(fid)))
        return rows

    async def after_commit(self, batch: Batch) -> None:
        released, inexact, dead = batch.notes.get("ofp", (0, 0, 0))
        self.flows_aggregated += released
        self.flows_inexact += inexact
        if inexact:
            self.last_inexact_at = time.time()
        self.dead_letters += dead
        self.duplicates += batch.duplicates
        self.mismatches += batch.mismatches
        self._dirty = False

    # ------------------------------------------------------------------------------- health

    def _oldest(self) -> tuple[float, float]:
        """Age (s) of the oldest waiting half and of the oldest joined flow waiting for the watermark."""
        now = time.time()
        halves = [h.taken_at for h in (next(iter(self._requests.values()), None),
                                        next(iter(self._anchors.values()), None)) if h is not None]
        joined = min((j.request.taken_at for j in self._joined), default=None)
        return (now - min(halves) if halves else 0.0), (now - joined if joined is not None else 0.0)

    def health(self) -> tuple[str, list[str]]:
        found = Findings()
        half_age, release_age = self._oldest()
        for age, code in ((half_age, "HALF_WAITING"), (release_age, "WATERMARK_STALLED")):
            found.ladder(age, WAIT_AMBER_S, WAIT_RED_S, f"{code}: oldest {age:.0f}s >= {WAIT_AMBER_S:.0f}s",
                         red_reason=f"{code}: oldest {age:.0f}s >= {WAIT_RED_S:.0f}s")
        if time.time() - self.lag_at <= LAG_FRESH_S:
            found.ladder(self.lag_ms, LAG_AMBER_MS, LAG_RED_MS,
                         f"LAG: {self.lag_ms}ms behind the bus >= {LAG_AMBER_MS}ms",
                         red_reason=f"LAG: {self.lag_ms}ms behind the bus >= {LAG_RED_MS}ms")
        found.ladder(self.dead_letters, 1, DEAD_LETTERS_RED, f"DEAD_LETTERS: {self.dead_letters}")
        found.ladder(self.mismatches, 1, None, f"PAYLOAD_MISMATCHES: {self.mismatches}")
        if self.last_inexact_at and time.time() - self.last_inexact_at <= INEXACT_RECENT_S:
            found.flag("AMBER", f"OUT_OF_ORDER_INPUT: {self.flows_inexact} flows aggregated after later events")
        return found.verdict()

    def _stream_watermark(self, stream: str) -> int | None:
        marks = [self._watermarks.get(s) for s in self._shards if s[0] == stream]
        return None if not marks or None in marks else min(m for m in marks if m is not None)

    def metrics(self) -> dict[str, Any]:
        half_age, release_age = self._oldest()
        out: dict[str, Any] = {
            "flows_aggregated_total": self.flows_aggregated,
            "flows_inexact_total": self.flows_inexact,
            "waiting_requests": len(self._requests),
            "waiting_anchors": len(self._anchors),
            "waiting_half_oldest_age_s": round(half_age, 3),
            "awaiting_watermark": len(self._joined),
            "awaiting_watermark_oldest_age_s": round(release_age, 3),
            "duplicates_total": self.duplicates,
            "payload_mismatches_total": self.mismatches,
            "dead_letters_total": self.dead_letters,
            "applied_lag_ms": self.lag_ms if time.time() - self.lag_at <= LAG_FRESH_S else 0,
            "keys_cached": self._kernel.key_count() if self._kernel else 0,
            "restores_total": self.restores,
        }
        for label, value in (("traffic", self._stream_watermark(self._traffic)),
                             ("flow_anchor", self._stream_watermark(self._anchor)),
                             ("release", self._release_wm)):
            if value is not None:
                out[f"watermark_{label}_us"] = value
        return out

    def health_details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"definitions_digest": self.definitions.digest if self.definitions else None}
        for label, value in (("traffic", self._stream_watermark(self._traffic)),
                             ("flow_anchor", self._stream_watermark(self._anchor)),
                             ("release", self._release_wm)):
            out[f"watermark_{label}_ts_utc"] = None if value is None else format_us(value)
        return out
