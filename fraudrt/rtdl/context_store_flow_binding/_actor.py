"""The CSFB actor: arrival events, arrival entities and flow anchors in; join frames and bindings out.

Nothing assumes an order across the three streams: each part is stored when it comes, and a binding
completes whenever its last part lands (in the batch of the anchor: a join hit; later: a late join).
A part is written once, with the event id and content hash it came from: another copy of that event
is a duplicate (nothing written), a changed copy a recorded mismatch, and another event claiming a
part that is already filled, or a flow that is already bound, is dead-lettered with the event that
holds it. Records that are not valid envelopes of their stream's type are dead-lettered with the
decoder's reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, NamedTuple

import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import parse_ts_utc
from fraudrt.rtdl._inputs import (
    ARRIVAL_ENTITIES_TYPE,
    ARRIVAL_EVENTS_TYPE,
    FLOW_ANCHOR_EVENT_TYPES,
    ArrivalEntities,
    ArrivalEvent,
    FlowAnchor,
    arrival_entities_decoder,
    arrival_entities_stream,
    arrival_event_decoder,
    arrival_events_stream,
    event_type_of,
    flow_anchor_decoder,
    flow_anchor_stream,
)
from fraudrt.runtime import Actor, Batch, ComponentContext, InboundRecord, content_hash

from . import _store
from ._health import Thresholds, evaluate
from ._model import is_int64, is_uint64, merchant_to_db

_ARRIVAL, _ENTITIES, _ANCHOR = "arrival_event", "arrival_entities", "flow_anchor"
_WATERMARK_OF: Final = {_ARRIVAL: "wm_arrival_events", _ENTITIES: "wm_arrival_entities", _ANCHOR: "wm_flow_anchor"}

Decoded = ArrivalEvent | ArrivalEntities | FlowAnchor


def _b(value: bool | None) -> str | None:
    return None if value is None else ("t" if value else "f")


def _s(value: int | None) -> str | None:
    return None if value is None else str(value)


_ENTITY_FIELDS: Final = ("party_id", "account_id", "instrument_id", "device_id", "ip_id")


def _ids(ev: Decoded) -> dict[str, int | None]:
    p = ev.payload
    ids: dict[str, int | None] = {"arrival_seq": p.arrival_seq}
    if isinstance(ev, FlowAnchor):
        ids["flow_id"] = ev.payload.flow_id
    if not isinstance(ev, ArrivalEvent):
        ids.update({f: getattr(p, f) for f in _ENTITY_FIELDS})
    if isinstance(ev, ArrivalEntities):
        ids["session_id"] = ev.payload.session_id
    return ids


def _problem(ev: Decoded) -> str | None:
    """Why a decoded record cannot be stored (a bad ts, ids outside the 64-bit columns), or None.

    Checked here, per record, because Postgres would fail the whole batch on one bad value and the
    runner would then replay it record by record. The common path is two C calls over a tuple."""
    p = ev.payload
    try:
        parse_ts_utc(p.ts_utc)
    except ValueError as exc:
        return f"payload.ts_utc: {exc}"
    if not is_uint64(p.merchant_id):
        return f"payload.merchant_id {p.merchant_id} is not a uint64"
    if isinstance(ev, FlowAnchor):
        a = ev.payload
        values: tuple[int, ...] = (a.arrival_seq, a.flow_id, a.party_id, a.account_id, a.instrument_id, a.device_id,
                                   a.ip_id)
        if not math.isfinite(a.amount):
            return f"payload.amount {a.amount} is not finite"
    elif isinstance(ev, ArrivalEntities):
        e = ev.payload
        values = (e.arrival_seq, e.party_id, e.account_id, e.instrument_id, e.device_id, e.ip_id, e.session_id or 0)
    else:
        values = (p.arrival_seq,)
    if is_int64(min(values)) and is_int64(max(values)):
        return None
    name, value = next((k, v) for k, v in _ids(ev).items() if v is not None and not is_int64(v))
    return f"payload.{name} {value} is not an int64"


@dataclass
class _BatchOutcome:
    """What a batch changed, kept in `batch.notes` until commit and then applied to the in-memory view."""

    deltas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_store.STAT_COLUMNS, 0))
    watermarks: dict[str, str | None] = field(default_factory=dict)
    cursor: int | None = None
    new_waiting: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    newest_arrival: float | None = None

    def see_cursor(self, seq: int | None) -> None:
        if seq is not None and (self.cursor is None or seq > self.cursor):
            self.cursor = seq

    def applied(self, part: str, ts_utc: str) -> None:
        column = _WATERMARK_OF[part]
        held = self.watermarks.get(column)
        if held is None or ts_utc > held:  # ts_utc is fixed width (validated): text order is time order
            self.watermarks[column] = ts_utc

    def reject(self, batch: Batch, record: InboundRecord, reason: str) -> None:
        batch.dead_letter(record, reason)
        self.deltas["rejected_total"] += 1

    def copy(self, batch: Batch, record: InboundRecord, held_hash: str | None, content_hash: str) -> None:
        """Another copy of an event already held: a duplicate (same content), or a recorded mismatch."""
        if held_hash == content_hash:
            self.deltas["duplicates_total"] += 1
            return
        batch.dead_letter(record, f"PAYLOAD_MISMATCH: event {record.event_id} is held with content hash "
                                  f"{held_hash}; this copy has {content_hash}")
        self.deltas["mismatches_total"] += 1


class _In(NamedTuple):
    record: InboundRecord
    event: Decoded
    content_hash: str


_Frames = dict[tuple[int, int], list[_In | None]]  # stored key -> [arrival event, arrival entities]
_Anchors = dict[int, _In]


def _frame_label(part: str, item: _In) -> str:
    p = item.event.payload
    return f"{part} of ({p.merchant_id}, {p.arrival_seq})"


def _merge(batch: Batch, items: list[tuple[str, _In]], out: _BatchOutcome) -> tuple[_Frames, _Anchors]:
    """The batch per frame key and per flow; the first event of a part wins. A later copy of that
    event is a duplicate or a mismatch, another event for it a conflict."""
    frames: _Frames = {}
    anchors: _Anchors = {}
    for part, item in items:
        ev = item.event
        if isinstance(ev, FlowAnchor):
            held = anchors.setdefault(ev.payload.flow_id, item)
            conflict = f"FLOW_BINDING_CONFLICT: flow {ev.payload.flow_id} is bound by event"
        else:
            slot = frames.setdefault((merchant_to_db(ev.payload.merchant_id), ev.payload.arrival_seq), [None, None])
            i = 0 if part == _ARRIVAL else 1
            held = slot[i] or item
            slot[i] = held
            conflict = f"JOIN_FRAME_CONFLICT: {_frame_label(part, item)} is event"
        if held is item:
            continue
        if held.event.event_id == ev.event_id:
            out.copy(batch, item.record, held.content_hash, item.content_hash)
        else:
            out.reject(batch, item.record, f"{conflict} {held.event.event_id}")
    return frames, anchors


def _settle(batch: Batch, out: _BatchOutcome, part: str, item: _In, stored: _store.Stored, conflict: str) -> bool:
    """What became of a part after its statement; True if this record is what filled it."""
    if stored.event_id == item.event.event_id:
        if stored.filled_now:
            out.applied(part, item.event.payload.ts_utc)
            return True
        out.copy(batch, item.record, stored.content_hash, item.content_hash)
    else:
        out.reject(batch, item.record, f"{conflict} {stored.event_id}")
    return False


def _frame_columns(frames: _Frames) -> list[list[str | None]]:
    cols: list[list[str | None]] = [[] for _ in range(2 + len(_store.FRAME_ARRIVAL_COLUMNS)
                                                      + len(_store.FRAME_ENTITY_COLUMNS))]
    for (merchant, seq), (arrival, entities) in frames.items():
        vals: list[str | None] = [str(merchant), str(seq)]
        if arrival is not None and isinstance(arrival.event, ArrivalEvent):
            a = arrival.event.payload
            vals += [arrival.event.event_id, arrival.content_hash, a.ts_utc, _b(a.is_virtual), a.channel_group,
                     a.zone_representation, a.tzid_primary, a.tzid_operational]
        else:
            vals += [None] * len(_store.FRAME_ARRIVAL_COLUMNS)
        if entities is not None and isinstance(entities.event, ArrivalEntities):
            e = entities.event.payload
            vals += [entities.event.event_id, entities.content_hash, str(e.party_id), str(e.account_id),
                     str(e.instrument_id), str(e.device_id), str(e.ip_id), _s(e.session_id)]
        else:
            vals += [None] * len(_store.FRAME_ENTITY_COLUMNS)
        for c, v in zip(cols, vals, strict=True):
            c.append(v)
    return cols


async def _apply_frames(batch: Batch, frames: _Frames, out: _BatchOutcome) -> list[tuple[int, int]]:
    """Upsert the frames; returns the keys this batch completed."""
    if not frames:
        return []
    completed: list[tuple[int, int]] = []
    for res in await _store.upsert_frames(batch.conn, batch.platform_run_id, _frame_columns(frames)):
        arrival, entities = frames[(res.merchant_id, res.arrival_seq)]
        for item, stored, part in ((arrival, res.arrival, _ARRIVAL), (entities, res.entities, _ENTITIES)):
            if item is not None:
                _settle(batch, out, part, item, stored, f"JOIN_FRAME_CONFLICT: {_frame_label(part, item)} is event")
        out.deltas["frames_total"] += res.created
        if res.completed_now:
            out.deltas["frames_complete"] += 1
            completed.append((res.merchant_id, res.arrival_seq))
    return completed


async def _apply_anchors(batch: Batch, anchors: _Anchors, out: _BatchOutcome) -> None:
    """Insert the new bindings: a hit when the frame is complete now, otherwise a waiting one."""
    if not anchors:
        return
    cols: list[list[str | None]] = [[] for _ in _store.BINDING_COLUMNS_DB]
    for flow_id, item in anchors.items():
        ev = item.event
        assert isinstance(ev, FlowAnchor)
        p = ev.payload
        vals = [str(flow_id), str(merchant_to_db(p.merchant_id)), str(p.arrival_seq), ev.event_id, item.content_hash,
                p.ts_utc, repr(float(p.amount)), str(p.party_id), str(p.account_id), str(p.instrument_id),
                str(p.device_id), str(p.ip_id)]
        for c, v in zip(cols, vals, strict=True):
            c.append(v)
    for b in await _store.insert_bindings(batch.conn, batch.platform_run_id, cols):
        if not _settle(batch, out, _ANCHOR, anchors[b.flow_id], b.stored,
                       f"FLOW_BINDING_CONFLICT: flow {b.flow_id} is bound by event"):
            continue
        out.deltas["bindings_total"] += 1
        if b.completion_seq is None:
            out.new_waiting.append(b.flow_id)
        else:
            out.deltas["join_hits"] += 1
            out.see_cursor(b.completion_seq)


class ContextStoreFlowBinding(Actor):
    name: ClassVar[str] = "context_store_flow_binding"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.rtdl.context_store_flow_binding",)
    max_batch: ClassVar[int] = 5000

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._streams: dict[str, tuple[str, msgspec.json.Decoder[Any], frozenset[str]]] = {}
        self.thresholds = Thresholds()
        self.stats: dict[str, int] = dict.fromkeys(_store.STAT_COLUMNS, 0)
        self.watermarks: dict[str, str | None] = dict.fromkeys(_store.WATERMARK_COLUMNS)
        self.completion_cursor = 0
        # flow_id -> wall time its anchor was applied, for bindings still waiting; insertion order
        # is time order, so the first entry is the oldest.
        self.waiting: dict[int, float] = {}
        self.failed_batches = 0
        self.last_commit_at: float | None = None
        self.last_apply_lag_s: float | None = None

    def subscriptions(self, settings: Settings) -> list[str]:
        return [arrival_events_stream(settings), arrival_entities_stream(settings), flow_anchor_stream(settings)]

    async def start(self, ctx: ComponentContext) -> None:
        s = ctx.settings
        self._streams = {
            arrival_events_stream(s): (_ARRIVAL, arrival_event_decoder, frozenset({ARRIVAL_EVENTS_TYPE})),
            arrival_entities_stream(s): (_ENTITIES, arrival_entities_decoder, frozenset({ARRIVAL_ENTITIES_TYPE})),
            flow_anchor_stream(s): (_ANCHOR, flow_anchor_decoder, FLOW_ANCHOR_EVENT_TYPES),
        }
        self.thresholds = Thresholds.from_options(ctx.options)
        async with ctx.pool.acquire() as conn:
            state = await _store.load_state(conn, ctx.platform_run_id)
        self.stats = dict(state.stats)
        self.watermarks = dict(state.watermarks)
        self.completion_cursor = state.completion_cursor
        self.waiting = dict(state.waiting)

    # ------------------------------------------------------------------ the batch

    def _decode(self, batch: Batch, out: _BatchOutcome) -> list[tuple[str, _In]]:
        """Each record as (part, decoded event, content hash); the others are dead-lettered with the reason."""
        items: list[tuple[str, _In]] = []
        for r in batch.records:
            spec = self._streams.get(r.stream)
            if spec is None:  # the runtime only delivers subscribed streams
                out.reject(batch, r, f"UNEXPECTED_STREAM: {r.stream}")
                continue
            part, decoder, types = spec
            try:
                ev = decoder.decode(r.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                kind = event_type_of(r.data)
                if kind is not None and kind not in types:
                    out.reject(batch, r, f"UNEXPECTED_EVENT_TYPE: {kind!r} on {r.stream}")
                else:
                    out.reject(batch, r, f"INVALID_{part.upper()}: {exc}")
                continue
            if ev.event_type not in types:
                out.reject(batch, r, f"UNEXPECTED_EVENT_TYPE: {ev.event_type!r} on {r.stream}")
                continue
            problem = _problem(ev)
            if problem is not None:
                out.reject(batch, r, f"INVALID_{part.upper()}: {problem}")
                continue
            items.append((part, _In(r, ev, content_hash(r))))
        return items

    async def handle(self, batch: Batch) -> None:
        try:
            await self._handle(batch)
        except BaseException:
            self.failed_batches += 1
            raise

    async def _handle(self, batch: Batch) -> None:
        out = _BatchOutcome()
        # No inbox: every part and binding is written once with its event id and content hash, so
        # the state itself tells a first copy from a duplicate, a mismatch or a conflict.
        frames, anchors = _merge(batch, self._decode(batch, out), out)
        completed_keys = await _apply_frames(batch, frames, out)
        await _apply_anchors(batch, anchors, out)
        late = await _store.complete_waiting(batch.conn, batch.platform_run_id, completed_keys)
        out.deltas["late_joins"] = len(late)
        out.completed = [flow for flow, _ in late]
        out.see_cursor(max((seq for _, seq in late), default=None))
        await _store.add_stats(batch.conn, batch.platform_run_id, out.deltas, out.watermarks, out.cursor)
        out.newest_arrival = max((r.arrival_ts for r in batch.records), default=None)
        batch.notes["csfb"] = out

    async def after_commit(self, batch: Batch) -> None:
        self.failed_batches = 0
        now = self._clock()
        self.last_commit_at = now
        out: _BatchOutcome | None = batch.notes.get("csfb")
        if out is None:
            return
        for name, delta in out.deltas.items():
            self.stats[name] += delta
        for column, ts in out.watermarks.items():
            held = self.watermarks.get(column)
            if ts is not None and (held is None or ts > held):
                self.watermarks[column] = ts
        if out.cursor is not None:
            self.completion_cursor = max(self.completion_cursor, out.cursor)
        for flow_id in out.completed:
            self.waiting.pop(flow_id, None)
        for flow_id in out.new_waiting:
            self.waiting[flow_id] = now
        if out.newest_arrival is not None:
            self.last_apply_lag_s = max(0.0, now - out.newest_arrival)

    # ------------------------------------------------------------------ health and metrics

    def _oldest_waiting(self) -> float | None:
        return next(iter(self.waiting.values()), None)

    def health(self) -> tuple[str, list[str]]:
        return evaluate(self.thresholds, now=self._clock(), oldest_waiting_at=self._oldest_waiting(),
                        waiting=len(self.waiting), last_commit_at=self.last_commit_at,
                        last_apply_lag_s=self.last_apply_lag_s, rejected=self.stats["rejected_total"],
                        mismatches=self.stats["mismatches_total"], failed_batches=self.failed_batches)

    def metrics(self) -> dict[str, Any]:
        s = self.stats
        oldest = self._oldest_waiting()
        return {
            "bindings_total": s["bindings_total"],
            "join_hits": s["join_hits"],
            "late_joins": s["late_joins"],
            # A gauge: bindings whose frame is still incomplete (= bindings_total - hits - late joins).
            "join_misses": len(self.waiting),
            "join_miss_oldest_age_s": round(self._clock() - oldest, 3) if oldest is not None else 0.0,
            "frames_total": s["frames_total"],
            "frames_complete": s["frames_complete"],
            "frames_incomplete": s["frames_total"] - s["frames_complete"],
            "dead_letters_total": s["rejected_total"],
            "payload_mismatches_total": s["mismatches_total"],
            "duplicates_total": s["duplicates_total"],
            "completion_cursor": self.completion_cursor,
            "apply_lag_ms": round(self.last_apply_lag_s * 1000) if self.last_apply_lag_s is not None else 0,
            # Event time applied per input (rejected records excluded); the runtime's
            # `watermark.<stream>/<shard>` gauges count every record read.
            **{f"applied_watermark.{k.removeprefix('wm_')}": v for k, v in self.watermarks.items()},
        }

    def health_details(self) -> dict[str, Any]:
        return {"watermarks": {k.removeprefix("wm_"): v for k, v in self.watermarks.items()},
                "join_misses": len(self.waiting), "thresholds": msgspec.to_builtins(self.thresholds)}
