"""Reading decision-lane records off `fp.bus.rtdl.v1`, the same way in every consumer of the lane.

`read_lane_record(record, wanted)` decodes the envelope once (pins included) and, for the event
types the consumer wants, the typed payload. It answers with the decoded record, with None (another
event type: the consumer counts it and passes over), or with the reason to dead-letter it: not a
lane event at all, an unknown schema version, no manifest fingerprint (nothing derived from it
could be stamped), or a payload that breaks its contract.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import msgspec

from fraudrt.contracts import SCHEMA_VERSION, DecisionLaneEvent, decode_payload, lane_event_decoder
from fraudrt.runtime import InboundRecord


class LaneRecord(NamedTuple):
    record: InboundRecord
    event: DecisionLaneEvent
    payload: Any
    # The payload's bytes as the producer encoded them (a re-published copy is byte-identical).
    content_hash: str


def read_lane_record(record: InboundRecord, wanted: frozenset[str]) -> LaneRecord | str | None:
    try:
        event = lane_event_decoder.decode(record.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"INVALID_EVENT: {exc}"
    if event.event_type not in wanted:
        return None
    label = f"INVALID_{event.event_type.upper()}"
    if event.schema_version != SCHEMA_VERSION:
        return f"UNSUPPORTED_SCHEMA_VERSION: {event.schema_version!r} (this reader takes {SCHEMA_VERSION})"
    if event.manifest_fingerprint is None:
        return f"{label}: no manifest_fingerprint to stamp on what derives from it"
    try:
        payload = decode_payload(event)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"{label}: {exc}"
    return LaneRecord(record, event, payload, hashlib.sha256(bytes(event.payload)).hexdigest()[:32])
