"""What the RTDL reads off the admitted bus: the streams of the run's mode and typed, truth-free payloads.

Every RTDL consumer decodes engine events through these structs, straight from the record bytes
(one msgspec decode, no dict in between). The structs name only what the platform may use: ground
truth (`fraud_flag`, `campaign_id`) rides on the traffic and flow-anchor rows, and is simply not a
field here, so no projector can store it and no decision can read it (DESIGN §4, §10). Unknown
fields are ignored, so a real engine's extra columns pass through.

Event types and payloads (reference/rtdl.md §1.1; the engine catalogue gives the columns):

- traffic `s3_event_stream_with_fraud_6B` / `s2_event_stream_baseline_6B`: one AUTH_REQUEST
  (event_seq 0, at the anchor's ts) and one AUTH_RESPONSE per flow;
- `arrival_events_5B`: an arrival at a merchant, keyed (merchant_id, arrival_seq);
- `s1_arrival_entities_6B`: the entities that made that arrival, same key;
- flow anchor `s3_flow_anchor_with_fraud_6B` / `s2_flow_anchor_baseline_6B`: flow_id -> arrival key,
  merchant and entities, ts and amount.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from fraudrt.config import Settings

Mode = Literal["fraud", "baseline"]

TRAFFIC_EVENT_TYPES: Final = frozenset({"s3_event_stream_with_fraud_6B", "s2_event_stream_baseline_6B"})
FLOW_ANCHOR_EVENT_TYPES: Final = frozenset({"s3_flow_anchor_with_fraud_6B", "s2_flow_anchor_baseline_6B"})
ARRIVAL_EVENTS_TYPE: Final = "arrival_events_5B"
ARRIVAL_ENTITIES_TYPE: Final = "s1_arrival_entities_6B"
AUTH_REQUEST: Final = "AUTH_REQUEST"


def run_mode(settings: Settings) -> Mode:
    """The mode the run streams (WSP's), which selects the traffic and flow-anchor streams."""
    return settings.wsp.mode


def traffic_stream(settings: Settings) -> str:
    return settings.streams.name("traffic_fraud" if run_mode(settings) == "fraud" else "traffic_baseline")


def flow_anchor_stream(settings: Settings) -> str:
    return settings.streams.name("flow_anchor_fraud" if run_mode(settings) == "fraud" else "flow_anchor_baseline")


def arrival_events_stream(settings: Settings) -> str:
    return settings.streams.name("arrival_events")


def arrival_entities_stream(settings: Settings) -> str:
    return settings.streams.name("arrival_entities")


# ------------------------------------------------------------------------------------ payloads


class TrafficPayload(msgspec.Struct, frozen=True):
    flow_id: int
    event_seq: int
    event_type: str
    ts_utc: str
    amount: float


class ArrivalEventPayload(msgspec.Struct, frozen=True):
    merchant_id: int
    arrival_seq: int
    ts_utc: str
    is_virtual: bool | None = None
    channel_group: str | None = None
    zone_representation: str | None = None
    tzid_primary: str | None = None
    tzid_operational: str | None = None


class ArrivalEntitiesPayload(msgspec.Struct, frozen=True):
    merchant_id: int
    arrival_seq: int
    ts_utc: str
    party_id: int
    account_id: int
    instrument_id: int
    device_id: int
    ip_id: int
    session_id: int | None = None


class FlowAnchorPayload(msgspec.Struct, frozen=True):
    flow_id: int
    arrival_seq: int
    merchant_id: int
    party_id: int
    account_id: int
    instrument_id: int
    device_id: int
    ip_id: int
    ts_utc: str
    amount: float


class _Engine(msgspec.Struct, frozen=True, kw_only=True):
    """The envelope fields an RTDL consumer needs around an engine payload."""

    event_id: str
    event_type: str
    ts_utc: str
    platform_run_id: str | None = None
    scenario_run_id: str | None = None


class TrafficEvent(_Engine, frozen=True, kw_only=True):
    payload: TrafficPayload


class ArrivalEvent(_Engine, frozen=True, kw_only=True):
    payload: ArrivalEventPayload


class ArrivalEntities(_Engine, frozen=True, kw_only=True):
    payload: ArrivalEntitiesPayload


class FlowAnchor(_Engine, frozen=True, kw_only=True):
    payload: FlowAnchorPayload


class _Kind(msgspec.Struct, frozen=True):
    event_type: str


kind_decoder: Final = msgspec.json.Decoder(_Kind)
traffic_decoder: Final = msgspec.json.Decoder(TrafficEvent)
arrival_event_decoder: Final = msgspec.json.Decoder(ArrivalEvent)
arrival_entities_decoder: Final = msgspec.json.Decoder(ArrivalEntities)
flow_anchor_decoder: Final = msgspec.json.Decoder(FlowAnchor)


def event_type_of(data: bytes) -> str | None:
    """The envelope's event_type, or None if the bytes are not an envelope (dead-letter those)."""
    try:
        return kind_decoder.decode(data).event_type
    except msgspec.DecodeError:
        return None
