"""What CSFB knows about a flow, in one definition shared by the actor, the reader and the offline check.

A **join frame** is one arrival, keyed (merchant_id, arrival_seq), made of two parts that arrive on
two streams: the arrival event (`arrival_events_5B`: time, channel, virtual/physical, time zones)
and the arrival's entities (`s1_arrival_entities_6B`: party, account, instrument, device, ip,
session). A **flow binding** is a flow anchor (flow_id -> frame key, merchant, entities, ts, amount)
joined to its frame. A binding is COMPLETE when all three parts are applied, otherwise WAITING with
the parts it misses. Each part is written once and never changes, so a COMPLETE binding is a pure
function of the world's events, whatever order the three streams were applied in.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal

import msgspec

Part = Literal["flow_anchor", "arrival_event", "arrival_entities"]
PARTS: Final[tuple[Part, ...]] = ("flow_anchor", "arrival_event", "arrival_entities")

# Engine merchant ids are UInt64; Postgres has no unsigned BIGINT. Stored with the same 64 bits.
_U64: Final = 1 << 64
_I64_MIN: Final = -(1 << 63)
_I64_END: Final = 1 << 63


def merchant_to_db(merchant_id: int) -> int:
    return merchant_id - _U64 if merchant_id >= _I64_END else merchant_id


def merchant_from_db(value: int) -> int:
    return value + _U64 if value < 0 else value


def is_uint64(value: int) -> bool:
    return 0 <= value < _U64


def is_int64(value: int) -> bool:
    return _I64_MIN <= value < _I64_END


class Readiness(enum.StrEnum):
    COMPLETE = "COMPLETE"
    WAITING = "WAITING"


class JoinFrameKey(msgspec.Struct, frozen=True):
    merchant_id: int
    arrival_seq: int


class ArrivalEventPart(msgspec.Struct, frozen=True, kw_only=True):
    """The arrival event's part of a join frame."""

    event_id: str
    ts_utc: str
    is_virtual: bool | None
    channel_group: str | None
    zone_representation: str | None
    tzid_primary: str | None
    tzid_operational: str | None


class ArrivalEntitiesPart(msgspec.Struct, frozen=True, kw_only=True):
    """The arrival entities' part of a join frame."""

    event_id: str
    party_id: int
    account_id: int
    instrument_id: int
    device_id: int
    ip_id: int
    session_id: int | None


class FlowAnchorPart(msgspec.Struct, frozen=True, kw_only=True):
    """The flow anchor's part of a binding (no ground truth: the decoder has no such fields)."""

    event_id: str
    ts_utc: str
    amount: float
    party_id: int
    account_id: int
    instrument_id: int
    device_id: int
    ip_id: int


class _Ready(msgspec.Struct, frozen=True, kw_only=True):
    readiness: Readiness
    missing: tuple[Part, ...]

    @property
    def complete(self) -> bool:
        return self.readiness is Readiness.COMPLETE


class JoinReadiness(_Ready, frozen=True, kw_only=True):
    """Whether a flow's binding is complete, and if not, which parts it still waits for.

    Without its anchor the frame key is unknown, so `missing` is then just ("flow_anchor",).
    """

    flow_id: int


class FlowBinding(_Ready, frozen=True, kw_only=True):
    """flow_id -> join frame key, the anchor, and the frame's arrival context and entities."""

    flow_id: int
    key: JoinFrameKey | None
    anchor: FlowAnchorPart | None
    arrival: ArrivalEventPart | None
    entities: ArrivalEntitiesPart | None


class JoinFrame(_Ready, frozen=True, kw_only=True):
    """One arrival's context (`missing` names frame parts only); `flow_ids`: the flows bound to it so far."""

    key: JoinFrameKey
    arrival: ArrivalEventPart | None
    entities: ArrivalEntitiesPart | None
    flow_ids: tuple[int, ...]


def missing_parts(anchor: bool, arrival: bool, entities: bool) -> tuple[Part, ...]:
    if not anchor:
        return ("flow_anchor",)
    frame: tuple[tuple[Part, bool], ...] = (("arrival_event", arrival), ("arrival_entities", entities))
    return tuple(p for p, have in frame if not have)


def readiness_of(missing: tuple[Part, ...]) -> Readiness:
    return Readiness.WAITING if missing else Readiness.COMPLETE


# ------------------------------------------------------------------ flat rows (offline comparison)

# The world fields of a binding, flat: what `offline.flow_bindings` computes with polars and
# `binding_row` reads off a `FlowBinding`. Event ids are provenance, not world fields, and are left out.
BINDING_COLUMNS: Final[tuple[str, ...]] = (
    "flow_id", "readiness", "missing", "merchant_id", "arrival_seq",
    "ts_utc", "amount", "party_id", "account_id", "instrument_id", "device_id", "ip_id",
    "arrival_ts_utc", "is_virtual", "channel_group", "zone_representation", "tzid_primary", "tzid_operational",
    "frame_party_id", "frame_account_id", "frame_instrument_id", "frame_device_id", "frame_ip_id", "session_id",
)

FRAME_COLUMNS: Final[tuple[str, ...]] = (
    "merchant_id", "arrival_seq", "readiness", "missing",
    "arrival_ts_utc", "is_virtual", "channel_group", "zone_representation", "tzid_primary", "tzid_operational",
    "party_id", "account_id", "instrument_id", "device_id", "ip_id", "session_id", "flow_ids",
)

_ARRIVAL_FIELDS: Final = ("is_virtual", "channel_group", "zone_representation", "tzid_primary", "tzid_operational")
_ENTITY_FIELDS: Final = ("party_id", "account_id", "instrument_id", "device_id", "ip_id")


def _arrival_flat(a: ArrivalEventPart | None) -> dict[str, Any]:
    out: dict[str, Any] = {"arrival_ts_utc": a.ts_utc if a else None}
    out.update({f: getattr(a, f) if a else None for f in _ARRIVAL_FIELDS})
    return out


def binding_row(b: FlowBinding) -> dict[str, Any]:
    """A binding as one flat row of `BINDING_COLUMNS` (missing parts as a comma-joined string)."""
    a, e = b.anchor, b.entities
    row: dict[str, Any] = {
        "flow_id": b.flow_id, "readiness": str(b.readiness), "missing": ",".join(b.missing),
        "merchant_id": b.key.merchant_id if b.key else None, "arrival_seq": b.key.arrival_seq if b.key else None,
        "ts_utc": a.ts_utc if a else None, "amount": a.amount if a else None,
    }
    row.update({f: getattr(a, f) if a else None for f in _ENTITY_FIELDS})
    row.update(_arrival_flat(b.arrival))
    row.update({f"frame_{f}": getattr(e, f) if e else None for f in _ENTITY_FIELDS})
    row["session_id"] = e.session_id if e else None
    return {c: row[c] for c in BINDING_COLUMNS}


def frame_row(f: JoinFrame) -> dict[str, Any]:
    """A frame as one flat row of `FRAME_COLUMNS` (flow ids as a sorted list)."""
    e = f.entities
    row: dict[str, Any] = {"merchant_id": f.key.merchant_id, "arrival_seq": f.key.arrival_seq,
                           "readiness": str(f.readiness), "missing": ",".join(f.missing)}
    row.update(_arrival_flat(f.arrival))
    row.update({k: getattr(e, k) if e else None for k in _ENTITY_FIELDS})
    row["session_id"] = e.session_id if e else None
    row["flow_ids"] = list(f.flow_ids)
    return {c: row[c] for c in FRAME_COLUMNS}
