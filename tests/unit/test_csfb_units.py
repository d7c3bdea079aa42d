"""CSFB pure logic: health thresholds, the offline join's edge cases, merchant ids above 2^63."""

from __future__ import annotations

from typing import Any

import msgspec
import polars as pl
import pytest

from fraudrt.rtdl.context_store_flow_binding import Thresholds, offline
from fraudrt.rtdl.context_store_flow_binding._health import evaluate
from fraudrt.rtdl.context_store_flow_binding._model import merchant_from_db, merchant_to_db, missing_parts

pytestmark = pytest.mark.unit

T = Thresholds()
IDLE: dict[str, Any] = {"now": 1000.0, "oldest_waiting_at": None, "waiting": 0, "last_commit_at": None,
                        "last_apply_lag_s": None, "rejected": 0, "mismatches": 0, "failed_batches": 0}


def test_an_idle_csfb_is_green_however_long_it_idles() -> None:
    assert evaluate(T, **IDLE) == ("GREEN", [])
    # The last batch was far behind the bus, but it is long committed and nothing arrived since.
    assert evaluate(T, **{**IDLE, "last_commit_at": 100.0, "last_apply_lag_s": 300.0}) == ("GREEN", [])


@pytest.mark.parametrize(("age", "state"), [(4.9, "GREEN"), (5.0, "AMBER"), (29.9, "AMBER"), (30.0, "RED")])
def test_waiting_bindings_turn_amber_then_red_as_they_age(age: float, state: str) -> None:
    got, reasons = evaluate(T, **{**IDLE, "oldest_waiting_at": 1000.0 - age, "waiting": 3})
    assert got == state
    if state != "GREEN":
        assert reasons[0].startswith("JOIN_WAIT_") and "3 bindings waiting" in reasons[0]


def test_recent_apply_lag_dead_letters_mismatches_and_failures() -> None:
    assert evaluate(T, **{**IDLE, "last_commit_at": 999.0, "last_apply_lag_s": 6.0})[0] == "AMBER"
    assert evaluate(T, **{**IDLE, "last_commit_at": 999.0, "last_apply_lag_s": 31.0})[0] == "RED"
    assert evaluate(T, **{**IDLE, "rejected": 1}) == ("AMBER", ["DEAD_LETTERS: 1 records rejected"])
    assert evaluate(T, **{**IDLE, "rejected": 100})[0] == "RED"
    assert evaluate(T, **{**IDLE, "mismatches": 2})[0] == "AMBER"
    assert evaluate(T, **{**IDLE, "failed_batches": 1})[0] == "AMBER"
    assert evaluate(T, **{**IDLE, "failed_batches": 3})[0] == "RED"
    state, reasons = evaluate(T, **{**IDLE, "rejected": 1, "failed_batches": 3})
    assert state == "RED" and len(reasons) == 2


def test_thresholds_come_from_the_manifest_options_and_refuse_unknown_keys() -> None:
    assert Thresholds.from_options({"health": {"join_wait_amber_s": 2}}).join_wait_amber_s == 2.0
    assert Thresholds.from_options({}) == Thresholds()
    with pytest.raises(msgspec.ValidationError):
        Thresholds.from_options({"health": {"join_wait_amber": 2}})


def test_merchant_ids_keep_all_64_bits() -> None:
    for m in (0, 1, 2**63 - 1, 2**63, 2**64 - 1):
        stored = merchant_to_db(m)
        assert -(2**63) <= stored < 2**63
        assert merchant_from_db(stored) == m
    assert missing_parts(False, True, True) == ("flow_anchor",)
    assert missing_parts(True, False, True) == ("arrival_event",)
    assert missing_parts(True, True, True) == ()


def _lf(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    return pl.LazyFrame(rows, infer_schema_length=None)


def test_offline_join_marks_missing_parts_keeps_first_copies_and_several_flows_per_arrival() -> None:
    events = _lf([
        {"merchant_id": 7, "arrival_seq": 1, "ts_utc": "2026-01-01T00:00:01.000000Z", "is_virtual": False,
         "channel_group": "card_present", "tzid_primary": "Europe/London"},
        # a later second copy of arrival (7, 1): the first one (stream order) is the one kept
        {"merchant_id": 7, "arrival_seq": 1, "ts_utc": "2026-01-01T00:00:09.000000Z", "is_virtual": True,
         "channel_group": "card_not_present", "tzid_primary": "Asia/Singapore"},
        {"merchant_id": 2**64 - 1, "arrival_seq": 3, "ts_utc": "2026-01-01T00:00:02.000000Z", "is_virtual": True,
         "channel_group": "card_not_present", "tzid_primary": "Europe/Berlin"},
    ])
    entities = _lf([{"merchant_id": 7, "arrival_seq": 1, "ts_utc": "2026-01-01T00:00:01.000000Z", "party_id": 1,
                     "account_id": 2, "instrument_id": 3, "device_id": 4, "ip_id": 5, "session_id": 6}])
    anchors = _lf([
        {"flow_id": f, "merchant_id": m, "arrival_seq": s, "ts_utc": "2026-01-01T00:00:01.000000Z", "amount": 1.5,
         "party_id": 1, "account_id": 2, "instrument_id": 3, "device_id": 4, "ip_id": 5, "fraud_flag": True,
         "campaign_id": "x"}
        for f, m, s in ((10, 7, 1), (11, 7, 1), (12, 2**64 - 1, 3), (13, 8, 1))])
    b = {r["flow_id"]: r for r in offline.flow_bindings(events, entities, anchors).to_dicts()}
    assert [(b[f]["readiness"], b[f]["missing"]) for f in (10, 11, 12, 13)] == [
        ("COMPLETE", ""), ("COMPLETE", ""), ("WAITING", "arrival_entities"),
        ("WAITING", "arrival_event,arrival_entities")]
    assert b[10]["channel_group"] == "card_present" and b[10]["zone_representation"] is None
    assert b[12]["merchant_id"] == 2**64 - 1
    assert not {k for k in b[10] if "fraud" in k or "campaign" in k}
    joined = offline.join_frames(events, entities, anchors).to_dicts()
    frames = {(r["merchant_id"], r["arrival_seq"]): r for r in joined}
    assert frames[(7, 1)]["flow_ids"] == [10, 11] and frames[(7, 1)]["readiness"] == "COMPLETE"
    assert frames[(2**64 - 1, 3)]["missing"] == "arrival_entities" and frames[(2**64 - 1, 3)]["flow_ids"] == [12]
    assert (8, 1) not in frames  # an anchor alone makes no frame
