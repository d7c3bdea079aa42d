"""The CSFB actor: arrival events, arrival entities and flow anchors in; join frames and bindings out.

Nothing assumes an order across the three streams: each part is stored when it comes, and a binding
completes whenever its last part lands (in the batch of the anchor: a join hit; later: a late join).
A part is written once: a copy of the same event is a duplicate (the runtime's inbox drops it), a
changed copy is a recorded mismatch, and another event claiming a part that is already filled, or
a flow that is already bound, is dead-lettered with the event that holds it. Records that are not
valid envelopes of their stream's type are dead-lettered with the decoder's reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

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
from fraudrt.runtime import Actor, Batch, ComponentContext, InboundRecord

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


def _problem(part: str, ev: Any) -> str | None:
    """Why a decoded record cannot be stored (ids out of the 64-bit ranges, a bad ts), or None."""
    p = ev.payload
    try:
        parse_ts_utc(p.ts_utc)
    except ValueError as exc:
        return f"payload.ts_utc: {exc}"
    if not is_uint64(p.merchant_id):
        return f"payload.merchant_id {p.merchant_id} is not a uint64"
    ids = [("arrival_seq", p.arrival_seq)]
    if part != _ARRIVAL:
        ids += [(f, getattr(p, f)) for f in ("party_id", "account_id", "instrument_id", "device_id", "ip_id")]
    if part == _ENTITIES and p.session_id is not None:
        ids.append(("session_id", p.session_id))
    if part == _ANCHOR:
        ids.append(("flow_id", p.flow_id))
        if not math.isfinite(p.amount):
            return f"payload.amount {p.amount} is not finite"
    for name, value in ids:
        if not is_int64(value):
            return f"payload.{name} {value} is not an int64"
    return None


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


_Slot = tuple[InboundRecord, ArrivalEvent | ArrivalEntities]
_Frames = dict[tuple[int, int], list[_Slot | None]]  # stored key -> [arrival event, arrival entities]
_Anchors = dict[int, tuple[InboundRecord, FlowAnchor]]


def _merge(batch: Batch, fresh: list[InboundRecord],
           decoded: dict[int, tuple[str, Decoded]]) -> tuple[_Frames, _Anchors]:
    """The batch per frame key and per flow. The first event of a part wins; another event for a
    part the batch already filled is a conflict (the inbox has removed same-id copies)."""
    frames: _Frames = {}
    anchors: _Anchors = {}
    for r in fresh:
        part, ev = decoded[id(r)]
        if isinstance(ev, FlowAnchor):
            flow_id = ev.payload.flow_id
            held = anchors.get(flow_id)
            if held is None:
                anchors[flow_id] = (r, ev)
            else:
                batch.dead_letter(r, f"FLOW_BINDING_CONFLICT: flow {flow_id} is bound by event {held[1].event_id}")
            continue
        p = ev.payload
        slot = frames.setdefault((merchant_to_db(p.merchant_id), p.arrival_seq), [None, None])
        i = 0 if part == _ARRIVAL else 1
        held_part = slot[i]
        if held_part is None:
            slot[i] = (r, ev)
        else:
            batch.dead_letter(r, f"JOIN_FRAME_CONFLICT: {part} of ({p.merchant_id}, {p.arrival_seq}) "
                                 f"is event {held_part[1].event_id}")
    return frames, anchors


def _frame_columns(frames: _Frames) -> list[list[str | None]]:
    cols: list[list[str | None]] = [[] for _ in range(2 + len(_store.FRAME_ARRIVAL_COLUMNS)
                                                      + len(_store.FRAME_ENTITY_COLUMNS))]
    for (merchant, seq), (arrival, entities) in frames.items():
        vals: list[str | None] = [str(merchant), str(seq)]
        if arrival is not None and isinstance(arrival[1], ArrivalEvent):
            a = arrival[1].payload
            vals += [arrival[1].event_id, a.ts_utc, _b(a.is_virtual), a.channel_group, a.zone_representation,
                     a.tzid_primary, a.tzid_operational]
        else:
            vals += [None] * len(_store.FRAME_ARRIVAL_COLUMNS)
        if entities is not None and isinstance(entities[1], ArrivalEntities):
            e = entities[1].payload
            vals += [entities[1].event_id, str(e.party_id), str(e.account_id), str(e.instrument_id),
                     str(e.device_id), str(e.ip_id), _s(e.session_id)]
        else:
            vals += [None] * len(_store.FRAME_ENTITY_COLUMNS)
        for c, v in zip(cols, vals, strict=True):
            c.append(v)
    return cols


async def _apply_frames(batch: Batch, frames: _Frames, out: _BatchOutcome) -> list[tuple[int, int]]:
    """Upsert the frames; returns the keys this batch completed. A part held by another event is a conflict."""
    if not frames:
        return []
    completed: list[tuple[int, int]] = []
    for res in await _store.upsert_frames(batch.conn, batch.platform_run_id, _frame_columns(frames)):
        arrival, entities = frames[(res.merchant_id, res.arrival_seq)]
        for slot, stored, part in ((arrival, res.arrival_event_id, _ARRIVAL),
                                   (entities, res.entities_event_id, _ENTITIES)):
            if slot is None:
                continue
            r, ev = slot
            if stored == ev.event_id:
                out.applied(part, ev.payload.ts_utc)
            else:
                p = ev.payload
                batch.dead_letter(r, f"JOIN_FRAME_CONFLICT: {part} of ({p.merchant_id}, {p.arrival_seq}) "
                                     f"is event {stored}")
        out.deltas["frames_total"] += res.created
        if res.completed_now:
            out.deltas["frames_complete"] += 1
            completed.append((res.merchant_id, res.arrival_seq))
    return completed


async def _apply_anchors(batch: Batch, anchors: _Anchors, out: _BatchOutcome) -> None:
    """Insert the new bindings (a hit when the frame is complete now); another anchor for a bound flow is a conflict."""
    if not anchors:
        return
    cols: list[list[str | None]] = [[] for _ in _store.BINDING_COLUMNS_DB]
    for flow_id, (_r, ev) in anchors.items():
        p = ev.payload
        vals = [str(flow_id), str(merchant_to_db(p.merchant_id)), str(p.arrival_seq), ev.event_id, p.ts_utc,
                repr(float(p.amount)), str(p.party_id), str(p.account_id), str(p.instrument_id), str(p.device_id),
                str(p.ip_id)]
        for c, v in zip(cols, vals, strict=True):
            c.append(v)
    for b in await _store.insert_bindings(batch.conn, batch.platform_run_id, cols):
        r, ev = anchors[b.flow_id]
        if b.inserted:
            out.applied(_ANCHOR, ev.payload.ts_utc)
            out.deltas["bindings_total"] += 1
            if b.completion_seq is None:
                out.new_waiting.append(b.flow_id)
            else:
                out.deltas["join_hits"] += 1
                out.see_cursor(b.completion_seq)
        elif b.stored_event_id == ev.event_id:
            out.deltas["duplicates_total"] += 1
        else:
            batch.dead_letter(r, f"FLOW_BINDING_CONFLICT: flow {b.flow_id} is bound by event {b.stored_event_id}")


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

    def _decode(self, batch: Batch) -> tuple[list[InboundRecord], dict[int, tuple[str, Decoded]]]:
        valid: list[InboundRecord] = []
        decoded: dict[int, tuple[str, Decoded]] = {}
        for r in batch.records:
            spec = self._streams.get(r.stream)
            if spec is None:  # the runtime only delivers subscribed streams
                batch.dead_letter(r, f"UNEXPECTED_STREAM: {r.stream}")
                continue
            part, decoder, types = spec
            try:
                ev = decoder.decode(r.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                kind = event_type_of(r.data)
                if kind is not None and kind not in types:
                    batch.dead_letter(r, f"UNEXPECTED_EVENT_TYPE: {kind!r} on {r.stream}")
                else:
                    batch.dead_letter(r, f"INVALID_{part.upper()}: {exc}")
                continue
            if ev.event_type not in types:
                batch.dead_letter(r, f"UNEXPECTED_EVENT_TYPE: {ev.event_type!r} on {r.stream}")
                continue
            problem = _problem(part, ev)
            if problem is not None:
                batch.dead_letter(r, f"INVALID_{part.upper()}: {problem}")
                continue
            valid.append(r)
            decoded[id(r)] = (part, ev)
        return valid, decoded

    async def handle(self, batch: Batch) -> None:
        try:
            await self._handle(batch)
        except BaseException:
            self.failed_batches += 1
            raise

    async def _handle(self, batch: Batch) -> None:
        valid, decoded = self._decode(batch)
        fresh = await batch.take_in(valid)
        frames, anchors = _merge(batch, fresh, decoded)
        out = _BatchOutcome()
        completed_keys = await _apply_frames(batch, frames, out)
        await _apply_anchors(batch, anchors, out)
        late = await _store.complete_waiting(batch.conn, batch.platform_run_id, completed_keys)
        out.deltas["late_joins"] = len(late)
        out.completed = [flow for flow, _ in late]
        out.see_cursor(max((seq for _, seq in late), default=None))
        out.deltas["rejected_total"] = len(batch.rejected)
        out.deltas["mismatches_total"] = batch.mismatches
        out.deltas["duplicates_total"] += batch.duplicates
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
            **{f"watermark.{k.removeprefix('wm_')}": v for k, v in self.watermarks.items()},
        }

    def health_details(self) -> dict[str, Any]:
        return {"watermarks": {k.removeprefix("wm_"): v for k, v in self.watermarks.items()},
                "join_misses": len(self.waiting), "thresholds": msgspec.to_builtins(self.thresholds)}
