"""The closed canonical envelope and the pins: round trips and every format rule."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from fraudrt.contracts import (
    Envelope,
    EnvelopeError,
    Pins,
    decode_envelope,
    encode_envelope,
    envelope_to_dict,
)

pytestmark = pytest.mark.unit

MF = "c8fd43cd" + "0" * 52 + "05c8"
PH = "56d45126" + "1" * 52 + "d2d7"

# control_ingress §8.5 step 2: the closed key set, and which of it is required.
REFERENCE_KEYS = {
    "event_id",
    "event_type",
    "ts_utc",
    "manifest_fingerprint",
    "parameter_hash",
    "seed",
    "scenario_id",
    "run_id",
    "platform_run_id",
    "scenario_run_id",
    "emitted_at_utc",
    "schema_version",
    "trace_id",
    "span_id",
    "parent_event_id",
    "producer",
    "payload",
}
REQUIRED = {"event_id", "event_type", "ts_utc", "manifest_fingerprint"}


def minimal() -> dict[str, Any]:
    return {
        "event_id": "e" * 64,
        "event_type": "s3_event_stream_with_fraud_6B",
        "ts_utc": "2026-01-01T00:00:01.123456Z",
        "manifest_fingerprint": MF,
    }


def full() -> dict[str, Any]:
    return {
        **minimal(),
        "schema_version": "v1",
        "platform_run_id": "platform_20260101T000000Z",
        "scenario_run_id": "a" * 32,
        "parameter_hash": PH,
        "seed": 42,
        "scenario_id": "baseline_v1",
        "run_id": "c25a2675fbfbacd952b13bb594880e92",
        "producer": "svc:world_stream_producer",
        "parent_event_id": "f" * 64,
        "trace_id": "t" * 128,
        "span_id": "local",
        "emitted_at_utc": "2026-01-01T00:00:02.000000Z",
        "payload": {
            "flow_id": 7,
            "amount": 12.5,
            "fraud_flag": False,
            "campaign_id": None,
            "nested": [1, {"a": "ü"}],
        },
    }


def test_field_set_is_exactly_the_reference_closed_set() -> None:
    assert set(Envelope.__struct_fields__) == REFERENCE_KEYS
    assert {f.name for f in msgspec.structs.fields(Envelope) if f.required} == REQUIRED
    for key in REQUIRED:
        data = minimal()
        del data[key]
        with pytest.raises(EnvelopeError) as info:
            decode_envelope(msgspec.json.encode(data))
        assert info.value.field == key
        assert "missing" in str(info.value)


def test_full_round_trip_bytes_and_dict() -> None:
    data = full()
    env = decode_envelope(json.dumps(data).encode())
    assert envelope_to_dict(env) == data
    assert decode_envelope(encode_envelope(env)) == env
    assert decode_envelope(data) == env
    assert decode_envelope(json.dumps(data)) == env
    assert decode_envelope(msgspec.Raw(json.dumps(data).encode())) == env


def test_encoding_is_compact_and_omits_absent_optionals() -> None:
    env = decode_envelope(minimal())
    raw = encode_envelope(env)
    assert b" " not in raw.replace(b"s3_event_stream", b"")
    assert json.loads(raw) == minimal()
    assert env.payload == {}
    assert env.seed is None and env.platform_run_id is None


def test_null_optionals_decode_as_absent() -> None:
    data = {**minimal(), "parameter_hash": None, "seed": None, "trace_id": None}
    env = decode_envelope(json.dumps(data).encode())
    assert env.parameter_hash is None and env.seed is None
    assert set(json.loads(encode_envelope(env))) == REQUIRED


def test_decoded_envelope_is_immutable() -> None:
    env = decode_envelope(full())
    with pytest.raises(AttributeError):
        env.event_id = "other"  # type: ignore[misc]


def test_error_carries_reason_code_and_is_value_error() -> None:
    with pytest.raises(ValueError) as info:
        decode_envelope({**minimal(), "seed": -1})
    err = info.value
    assert isinstance(err, EnvelopeError)
    assert err.reason_code == "ENVELOPE_INVALID"
    assert err.field == "seed"
    assert "seed" in str(err) and "unsigned 64-bit" in str(err)


BAD_VALUES: list[tuple[str, Any, str]] = [
    ("event_id", "", "1..256"),
    ("event_id", "x" * 257, "1..256"),
    ("event_id", 12, "1..256"),
    ("event_type", "", "1..256"),
    ("ts_utc", "2026-01-01T00:00:01Z", "YYYY-MM-DD"),
    ("ts_utc", "2026-01-01T00:00:01.123456+00:00", "YYYY-MM-DD"),
    ("ts_utc", "2026-01-01T00:00:01.123456Z\n", "YYYY-MM-DD"),
    ("ts_utc", "2026-02-30T00:00:01.123456Z", "calendar"),
    ("ts_utc", "2026-01-01T25:00:01.123456Z", "YYYY-MM-DD"),
    ("emitted_at_utc", "2026-01-01T00:00:01.123Z", "YYYY-MM-DD"),
    ("emitted_at_utc", "2026-04-31T00:00:01.123456Z", "calendar"),
    ("manifest_fingerprint", MF.upper(), "64 lowercase hex"),
    ("manifest_fingerprint", MF[:-1], "64 lowercase hex"),
    ("manifest_fingerprint", MF + "\n", "64 lowercase hex"),
    ("manifest_fingerprint", "g" * 64, "64 lowercase hex"),
    ("parameter_hash", PH + "0", "64 lowercase hex"),
    ("scenario_run_id", "A" * 32, "32 lowercase hex"),
    ("scenario_run_id", "a" * 64, "32 lowercase hex"),
    ("run_id", "a" * 31, "32 lowercase hex"),
    ("platform_run_id", "platform_20260101T000000", "platform_YYYYMMDDTHHMMSSZ"),
    ("platform_run_id", "platform_20260101T000000Z\n", "platform_YYYYMMDDTHHMMSSZ"),
    ("seed", -1, "unsigned 64-bit"),
    ("seed", 2**64, "unsigned 64-bit"),
    ("seed", True, "unsigned 64-bit"),
    ("seed", "42", "unsigned 64-bit"),
    ("seed", 4.0, "unsigned 64-bit"),
    ("scenario_id", "s" * 257, "1..256"),
    ("scenario_id", "", "1..256"),
    ("producer", "p" * 129, "1..128"),
    ("trace_id", "t" * 129, "1..128"),
    ("span_id", "s" * 129, "1..128"),
    ("parent_event_id", "", "1..256"),
    ("schema_version", 1, "1..64"),
    ("payload", [1, 2], "JSON object"),
    ("payload", "{}", "JSON object"),
]


@pytest.mark.parametrize(("field", "value", "hint"), BAD_VALUES)
@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "dict"])
def test_every_format_rule_names_the_field(field: str, value: Any, hint: str, as_bytes: bool) -> None:
    data = {**full(), field: value}
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(msgspec.json.encode(data) if as_bytes else data)
    assert info.value.field == field
    assert field in str(info.value)
    assert hint in info.value.reason


def test_largest_seed_is_accepted() -> None:
    assert decode_envelope({**minimal(), "seed": 2**64 - 1}).seed == 2**64 - 1


def test_unknown_top_level_field_is_named() -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(msgspec.json.encode({**full(), "fraud_flag": True}))
    assert info.value.field == "fraud_flag"
    assert "closed" in info.value.reason


def test_payload_contents_are_free() -> None:
    env = decode_envelope(
        {**minimal(), "payload": {"anything": {"deep": [None, 1.5, "x"]}, "fraud_flag": True}}
    )
    assert env.payload["anything"]["deep"] == [None, 1.5, "x"]


@pytest.mark.parametrize("raw", [b"[]", b'"x"', b"null", b"{", b"", b"\xff"])
def test_whole_document_errors_use_dollar(raw: bytes) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(raw)
    assert info.value.field == "$"


def test_envelope_to_dict_matches_encoding() -> None:
    env = decode_envelope(full())
    assert envelope_to_dict(env) == json.loads(encode_envelope(env))
    assert list(envelope_to_dict(env)) == list(json.loads(encode_envelope(env)))


# ---------------------------------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------------------------------


def pins_dict() -> dict[str, Any]:
    return {
        "platform_run_id": "platform_20260101T000000Z",
        "scenario_run_id": "a" * 32,
        "manifest_fingerprint": MF,
        "parameter_hash": PH,
        "seed": 42,
        "scenario_id": "baseline_v1",
        "run_id": "b" * 32,
    }


def test_pins_round_trip_and_to_dict() -> None:
    pins = Pins.from_mapping(pins_dict())
    assert pins.seed == 42
    assert pins.to_dict() == pins_dict()
    without_run = {k: v for k, v in pins_dict().items() if k != "run_id"}
    assert Pins.from_mapping(without_run).to_dict() == without_run


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", "42"),
        ("seed", True),
        ("seed", -1),
        ("seed", 2**64),
        ("manifest_fingerprint", "x"),
        ("scenario_run_id", "a" * 64),
        ("platform_run_id", "platform_x"),
        ("run_id", "B" * 32),
        ("unexpected", 1),
    ],
)
def test_pins_reject_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field if field != "unexpected" else "unexpected"):
        Pins.from_mapping({**pins_dict(), field: value})


def test_pins_require_every_pin_but_run_id() -> None:
    for key in pins_dict():
        if key == "run_id":
            continue
        data = pins_dict()
        del data[key]
        with pytest.raises(ValueError, match=key):
            Pins.from_mapping(data)
