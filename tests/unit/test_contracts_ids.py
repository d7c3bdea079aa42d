"""Id recipes against hand-built preimages (the reference formulas written out literally)."""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import math
import random
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fraudrt.contracts as contracts
from fraudrt.contracts import (
    IdRecipeError,
    PrimaryKeyMissing,
    action_id,
    action_idempotency_key,
    action_intent_event_id,
    al_outcome_id,
    canon_compact,
    canon_default,
    case_id,
    case_pins,
    case_timeline_event_id,
    case_trigger_id,
    cm_action_idempotency_key,
    decision_response_event_id,
    derive_id,
    df_decision_id,
    dla_quarantine_id,
    engine_event_id,
    governance_event_id,
    ieg_entity_id,
    ieg_graph_version_id,
    ig_dedupe_key,
    ig_policy_digest,
    ig_quarantine_id,
    ig_quarantine_key,
    ig_receipt_id,
    label_assertion_id,
    label_assertion_payload_hash,
    ofp_basis_digest,
    oracle_pack_id,
    partition_key,
    payload_hash,
    ready_message_id,
    recipe_hash,
    scenario_run_id,
    scenario_set_id,
    sha256_hex,
    source_locator_digest,
    sr_attempt_id,
    sr_intent_fingerprint,
    sr_plan_hash,
    sr_record_event_id,
    stream_view_id,
    terminal_reemit_key,
    wsp_checkpoint_scope_key,
    wsp_lane_index,
)

pytestmark = pytest.mark.unit

MF = "c8fd43cd" + "0" * 52 + "05c8"
PH = "56d45126" + "1" * 52 + "d2d7"
PRID = "platform_20260101T000000Z"
SRID = "a" * 32


def s(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pins() -> dict[str, Any]:
    return {
        "platform_run_id": PRID,
        "scenario_run_id": SRID,
        "manifest_fingerprint": MF,
        "parameter_hash": PH,
        "seed": 42,
        "scenario_id": "baseline_v1",
    }


# ---------------------------------------------------------------------------------------------------
# Canonicalisation
# ---------------------------------------------------------------------------------------------------


def test_canon_compact_and_default_bytes() -> None:
    obj = {"b": [1, 2.5], "a": "é", "c": None}
    assert canon_compact(obj) == b'{"a":"\\u00e9","b":[1,2.5],"c":null}'
    assert canon_default(obj) == b'{"a": "\\u00e9", "b": [1, 2.5], "c": null}'


def test_the_two_canonicalisations_change_hashes() -> None:
    obj = {"event_kind": "RUN_ACCEPTED", "run_id": SRID, "details": {}}
    assert sha256_hex(canon_compact(obj)) != sha256_hex(canon_default(obj))


def test_canon_compact_floats_follow_python_json_not_msgspec() -> None:
    # msgspec writes 1e16 as "1e16"; the reference hashes Python's "1e+16".
    assert canon_compact({"x": 1e16}) == b'{"x":1e+16}'


_JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
                 | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
                 | st.sampled_from([1e-4, 9.999999999999999e-05, 1e16, 9999999999999998.0, -0.0, 5e-324, "\x7f"]))
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=5), max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(_JSON)
def test_canon_compact_is_stdlib_json_byte_for_byte(value: Any) -> None:
    # canon_compact takes msgspec's faster path when it can; the bytes must be the stdlib's exactly.
    assert canon_compact(value) == json.dumps(value, sort_keys=True, ensure_ascii=True,
                                              separators=(",", ":")).encode("ascii")


def test_canon_compact_floats_of_every_magnitude_match_stdlib() -> None:
    rng = random.Random(7)
    values = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(20_000)]
    values += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-8, 20) for _ in range(20_000)]
    values = [v for v in values if math.isfinite(v)]
    for v in values:
        assert canon_compact({"v": v}) == json.dumps({"v": v}, separators=(",", ":")).encode(), v


def test_canon_compact_non_json_types_behave_as_stdlib() -> None:
    # Values msgspec would encode but json refuses (or spells otherwise) take the stdlib path.
    assert canon_compact({"t": (1, 2)}) == b'{"t":[1,2]}'
    assert canon_compact({"n": float("nan")}) == b'{"n":NaN}'
    assert canon_compact({1: "a", 2: "b"}) == b'{"1":"a","2":"b"}'
    with pytest.raises(TypeError):
        canon_compact({"b": b"raw"})


def test_sha256_hex_accepts_str_and_bytes() -> None:
    assert sha256_hex("abc") == sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()


# ---------------------------------------------------------------------------------------------------
# Control + ingress (control_ingress §2)
# ---------------------------------------------------------------------------------------------------


def test_engine_event_id_reference_example() -> None:
    flow_id = 8817264551982
    row = {
        "flow_id": flow_id,
        "event_seq": 0,
        "seed": 42,
        "manifest_fingerprint": MF,
        "scenario_id": "baseline_v1",
        "amount": 10.0,
    }
    pk = ["seed", "manifest_fingerprint", "scenario_id", "flow_id", "event_seq"]
    expected = s(f"s3_event_stream_with_fraud_6B|42|{MF}|baseline_v1|{flow_id}|0|{MF}|{PH}|42|baseline_v1")
    got = engine_event_id("s3_event_stream_with_fraud_6B", row, pk, pins())
    assert got == expected
    assert len(got) == 64


def test_engine_event_id_ignores_platform_run_and_skips_absent_pins() -> None:
    row = {"merchant_id": 5, "arrival_seq": 1}
    pk = ["merchant_id", "arrival_seq"]
    a = engine_event_id(
        "arrival_events_5B", row, pk, {**pins(), "platform_run_id": "platform_20990101T000000Z"}
    )
    assert a == engine_event_id("arrival_events_5B", row, pk, pins())
    partial = {"manifest_fingerprint": MF, "seed": 7, "parameter_hash": None}
    assert engine_event_id("arrival_events_5B", row, pk, partial) == s(f"arrival_events_5B|5|1|{MF}|7")


@pytest.mark.parametrize("row", [{"flow_id": 1}, {"flow_id": 1, "event_seq": None}])
def test_engine_event_id_primary_key_missing(row: dict[str, Any]) -> None:
    with pytest.raises(PrimaryKeyMissing) as info:
        engine_event_id("s2_event_stream_baseline_6B", row, ["flow_id", "event_seq"], pins())
    assert info.value.reason_code == "PRIMARY_KEY_MISSING"
    assert "PRIMARY_KEY_MISSING" in str(info.value) and "event_seq" in str(info.value)
    assert isinstance(info.value, IdRecipeError)


def test_ig_dedupe_receipt_quarantine_ids() -> None:
    eid = "e" * 64
    assert ig_dedupe_key(PRID, "traffic_fraud", eid) == s(f"{PRID}:traffic_fraud:{eid}")
    assert len(ig_dedupe_key(PRID, "traffic_fraud", eid)) == 64
    assert ig_receipt_id("ADMIT", eid) == s(f"ADMIT:{eid}")[:32]
    assert ig_receipt_id("DUPLICATE", eid) != ig_receipt_id("ADMIT", eid)
    assert ig_quarantine_id(eid) == s(f"QUARANTINE:{eid}")[:32]
    # A quarantine *record* id and a QUARANTINE *receipt* id coincide by construction.
    assert ig_quarantine_id(eid) == ig_receipt_id("QUARANTINE", eid)
    # What IG feeds to those recipes for a quarantine: distinct per run, reason and content.
    key = ig_quarantine_key(PRID, eid, "SCHEMA_FAIL", "c" * 64)
    assert key == f"{PRID}:{eid}:SCHEMA_FAIL:{'c' * 64}"
    assert ig_quarantine_id(key) != ig_quarantine_id(ig_quarantine_key(PRID, eid, "PINS_MISSING", "c" * 64))


def test_payload_hash_is_compact_canonical() -> None:
    payload = {"flow_id": 1, "amount": 2.5, "campaign_id": None}
    preimage = (
        '{"event_type":"t","payload":{"amount":2.5,"campaign_id":null,"flow_id":1},"schema_version":"v1"}'
    )
    assert payload_hash("t", "v1", payload) == s(preimage)
    assert payload_hash("t", None, payload) != payload_hash("t", "v1", payload)
    reordered = {"campaign_id": None, "amount": 2.5, "flow_id": 1}
    assert payload_hash("t", "v1", reordered) == payload_hash("t", "v1", payload)


def test_partition_key() -> None:
    assert partition_key(123) == s("123")
    assert partition_key("abc") == s("abc")


def test_sr_ids() -> None:
    assert scenario_run_id("local_full_run_5_reuse") == s("sr_run|local_full_run_5_reuse")[:32]
    with pytest.raises(IdRecipeError):
        scenario_run_id("")
    assert sr_attempt_id(SRID, 1) == s(f"sr_attempt|{SRID}|1")[:32]
    assert scenario_set_id(["b", "a", "b"]) == "scnset_" + s("a|b")[:16]
    bundle = "d" * 64
    assert ready_message_id(PRID, SRID, bundle) == s(f"ready|{PRID}|{SRID}|{bundle}")
    details = {"x": 1}
    assert sr_record_event_id("RUN_ACCEPTED", SRID, details) == s(
        '{"details": {"x": 1}, "event_kind": "RUN_ACCEPTED", "run_id": "' + SRID + '"}'
    )
    status = {"state": "FAILED"}
    status_digest = s('{"state": "FAILED"}')
    assert terminal_reemit_key(SRID, "FAILED", status) == s(f"terminal|{SRID}|FAILED|{status_digest}")
    assert sr_plan_hash({"b": 1, "plan_hash": "zzz"}) == s('{"b": 1}')


def test_sr_intent_fingerprint_uses_canon_default_and_isoformat() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = datetime(2026, 1, 2, tzinfo=UTC)
    got = sr_intent_fingerprint(
        manifest_fingerprint=MF,
        parameter_hash=PH,
        seed=42,
        scenario_id="baseline_v1",
        scenario_set=None,
        window_start_utc=start,
        window_end_utc=end,
        window_tz="UTC",
    )
    preimage = (
        f'{{"manifest_fingerprint": "{MF}", "parameter_hash": "{PH}", "scenario_id": "baseline_v1", '
        '"scenario_set": null, "seed": 42, "window_end_utc": "2026-01-02T00:00:00+00:00", '
        '"window_start_utc": "2026-01-01T00:00:00+00:00", "window_tz": "UTC"}'
    )
    assert got == s(preimage)


def test_oracle_pack_stream_view_and_locator_digest() -> None:
    cat, gates = "1" * 64, "2" * 64
    got = oracle_pack_id(
        manifest_fingerprint=MF,
        parameter_hash=PH,
        scenario_id="baseline_v1",
        seed=42,
        engine_release="local",
        catalogue_digest=cat,
        gate_map_digest=gates,
    )
    assert got == s(f"{MF}|{PH}|baseline_v1|42|local|{cat}|{gates}")
    root = "s3://oracle-store/local_full_run-5/c25a2675fbfbacd952b13bb594880e92"
    preimage = (
        f'{{"engine_run_root":"{root}","output_id":"arrival_events_5B","partition_granularity":"flat",'
        '"scenario_id":"baseline_v1","sort_keys":["ts_utc","filename","file_row_number"]}'
    )
    assert stream_view_id(
        engine_run_root=root, scenario_id="baseline_v1", output_id="arrival_events_5B"
    ) == s(preimage)
    assert source_locator_digest(["s3://b/2.parquet", "s3://b/1.parquet"]) == s(
        "s3://b/1.parquet\ns3://b/2.parquet"
    )


def test_wsp_scope_key_and_lane() -> None:
    got = wsp_checkpoint_scope_key(
        pack_key="p" * 64, platform_run_id=PRID, scenario_run_id=SRID, lane_count=4, lane_index=1
    )
    assert got == s(f"{'p' * 64}|{PRID}|{SRID}|4|1|")
    eid = "e" * 64
    expected_lane = int.from_bytes(hashlib.sha256(eid.encode()).digest()[:8], "big") % 4
    assert wsp_lane_index(eid, 4) == expected_lane
    assert wsp_lane_index(eid, 1) == 0
    with pytest.raises(IdRecipeError):
        wsp_lane_index(eid, 0)


def test_ig_policy_digest_includes_paths() -> None:
    docs = {"b.yaml": {"k": 1}, "a.yaml": {"z": [1]}}
    preimage = '[{"content":"{\\"z\\":[1]}","path":"a.yaml"},{"content":"{\\"k\\":1}","path":"b.yaml"}]'
    assert ig_policy_digest(docs) == s(preimage)
    assert ig_policy_digest({"c.yaml": {"k": 1}, "a.yaml": {"z": [1]}}) != ig_policy_digest(docs)


def test_governance_event_id() -> None:
    got = governance_event_id("run_started", PRID, SRID, "wsp", dedupe_key="started:m1")
    assert got == s(f"RUN_STARTED|{PRID}|{SRID}|wsp|started:m1")
    by_details = governance_event_id("CORRIDOR_ANOMALY", PRID, None, "ig", details={"b": 2, "a": 1})
    assert by_details == s(f'CORRIDOR_ANOMALY|{PRID}||ig|{{"a":1,"b":2}}')
    with pytest.raises(IdRecipeError):
        governance_event_id("RUN_ENDED", PRID, None, "wsp")


# ---------------------------------------------------------------------------------------------------
# RTDL (rtdl.md §11)
# ---------------------------------------------------------------------------------------------------


def test_decision_response_event_id_pin_scope_stringified() -> None:
    preimage = (
        '{"payload":{"decision_scope":"fraud.primary","pin_scope":{'
        f'"manifest_fingerprint":"{MF}","parameter_hash":"{PH}","platform_run_id":"{PRID}",'
        f'"scenario_id":"baseline_v1","scenario_run_id":"{SRID}","seed":"42"}},"source_event_id":"src"}},'
        '"recipe":"df.decision_response.event_id.v1"}'
    )
    assert decision_response_event_id("src", pins()) == s(preimage)


def test_intent_ids_lowercase_action_kind_and_differ_by_recipe() -> None:
    a = action_intent_event_id("src", "STEP_UP", pins())
    assert a == action_intent_event_id("src", "step_up", pins())
    assert a != action_idempotency_key("src", "STEP_UP", pins())
    assert len(a) == 64
    assert action_id("d" * 32, "STEP_UP") == s(f"{'d' * 32}:STEP_UP")[:32]


def test_df_decision_id() -> None:
    got = df_decision_id(
        source_event_id="src",
        platform_run_id=PRID,
        bundle_id="b" * 64,
        bundle_version="v1",
        registry_ref="registry://x",
        topic="fp.bus.traffic.fraud.v1",
        partition=0,
        offset="4959",
        offset_kind="kinesis_sequence",
    )
    payload = {
        "source_event_id": "src",
        "platform_run_id": PRID,
        "decision_scope": "fraud.primary",
        "bundle_ref": {"bundle_id": "b" * 64, "bundle_version": "v1", "registry_ref": "registry://x"},
        "origin_offset": {
            "topic": "fp.bus.traffic.fraud.v1",
            "partition": 0,
            "offset": "4959",
            "offset_kind": "kinesis_sequence",
        },
    }
    preimage = json.dumps(
        {"recipe": "df.decision_id.v2", "payload": payload}, sort_keys=True, separators=(",", ":")
    )
    assert got == s(preimage)[:32]


def test_al_outcome_id() -> None:
    got = al_outcome_id(
        decision_id="d",
        action_id="a",
        idempotency_key="k",
        terminal_state="EXECUTED",
        reason_code=None,
        final_attempt_seq=1,
    )
    preimage = (
        '{"action_id":"a","decision_id":"d","final_attempt_seq":1,"idempotency_key":"k",'
        '"reason_code":null,"terminal_state":"EXECUTED"}'
    )
    assert got == s(preimage)[:32]


def test_ieg_and_dla_ids() -> None:
    got = ieg_entity_id("account", "account_id", 99, {**pins(), "run_id": None})
    assert got == s(f"account:account_id:99:{PRID}|{MF}|{PH}|42|baseline_v1|{SRID}|")
    gv = ieg_graph_version_id(
        "ieg::x", [("t", 10, "5", "kinesis_sequence"), ("t", 9, "4", "kinesis_sequence")]
    )
    preimage = (
        '{"stream_id":"ieg::x","topics":{"t":{"partitions":{"10":{"next_offset":"5","offset_kind":'
        '"kinesis_sequence"},"9":{"next_offset":"4","offset_kind":"kinesis_sequence"}}}}}'
    )
    assert gv == s(preimage)[:32]
    assert (
        dla_quarantine_id("t", 0, "9", "kinesis_sequence", "R", "e") == s("t|0|9|kinesis_sequence|R|e")[:32]
    )


def test_ofp_basis_digest_is_order_independent() -> None:
    a = ofp_basis_digest("s", "kinesis_sequence", [("t2", 0, "1"), ("t1", 1, "2")])
    b = ofp_basis_digest("s", "kinesis_sequence", [("t1", 1, "2"), ("t2", 0, "1")])
    assert a == b
    preimage = (
        '{"offset_kind":"kinesis_sequence","offsets":[{"offset":"2","partition":1,"topic":"t1"},'
        '{"offset":"1","partition":0,"topic":"t2"}],"stream":"s"}'
    )
    assert a == s(preimage)


# ---------------------------------------------------------------------------------------------------
# Case + labels (case_operate_obs.md §1.3)
# ---------------------------------------------------------------------------------------------------


def test_case_ids_chain() -> None:
    cid = case_id(PRID, "rtdl_decision", "e1")
    preimage = (
        '{"payload":{"event_class":"rtdl_decision","event_id":"e1","platform_run_id":"'
        + PRID
        + '"},"recipe":"cm.case_id.v1"}'
    )
    assert cid == s(preimage)[:32]
    tid = case_trigger_id(cid, "DECISION_ESCALATION", "decision:d1")
    assert (
        tid
        == recipe_hash(
            "cm.case_trigger_id.v1",
            {"case_id": cid, "trigger_type": "DECISION_ESCALATION", "source_ref_id": "decision:d1"},
        )[:32]
    )
    tl = case_timeline_event_id(cid, "CASE_TRIGGERED", tid)
    assert len(tl) == 32 and tl != tid


def test_label_assertion_id_excludes_value_and_payload_hash_includes_it() -> None:
    lid = label_assertion_id("tl1", PRID, "e1", "fraud_disposition")
    preimage = (
        '{"payload":{"case_timeline_event_id":"tl1","label_subject_key":{"event_id":"e1","platform_run_id":"'
        + PRID
        + '"},"label_type":"fraud_disposition"},"recipe":"ls.label_assertion_id.v1"}'
    )
    assert lid == s(preimage)[:32]

    def h(value: str) -> str:
        return label_assertion_payload_hash(
            platform_run_id=PRID,
            event_id="e1",
            label_type="fraud_disposition",
            label_value=value,
            effective_time="2026-01-01T00:00:00.000000Z",
            observed_time="2026-01-01T00:00:00.000000Z",
            source_type="AUTO",
            actor_id=None,
            evidence_refs=[{"ref_type": "DECISION", "ref_id": "2"}, {"ref_type": "DECISION", "ref_id": "1"}],
        )

    assert h("FRAUD_CONFIRMED") != h("LEGIT_CONFIRMED")
    assert len(h("FRAUD_CONFIRMED")) == 64


def test_case_pins_normalise_seed_and_refuse_gaps() -> None:
    assert case_pins({**pins(), "seed": "42"})["seed"] == 42
    for bad in (True, "-1", "4x", "４２"):
        with pytest.raises(IdRecipeError):
            case_pins({**pins(), "seed": bad})
    with pytest.raises(IdRecipeError, match="scenario_id"):
        case_pins({**pins(), "scenario_id": ""})


def test_cm_action_idempotency_key() -> None:
    got = cm_action_idempotency_key("c1", "tl1", "BLOCK_ACCOUNT", "ACCOUNT", "acc-9")
    preimage = (
        '{"payload":{"action_kind":"BLOCK_ACCOUNT","case_id":"c1","source_case_event_id":"tl1",'
        '"target_ref":{"ref_id":"acc-9","ref_type":"ACCOUNT"}},"recipe":"cm.action_intent.idempotency_key.v1"}'
    )
    assert got == s(preimage)


# ---------------------------------------------------------------------------------------------------
# Generic recipe and the registry itself
# ---------------------------------------------------------------------------------------------------


def test_derive_id() -> None:
    assert derive_id("x.v1", "a", 7) == s("x.v1|a|7")[:32]
    assert derive_id("x.v1", "a", 7, length=64) == s("x.v1|a|7")
    for bad_parts in (("a|b",), (True,), (1.5,)):
        with pytest.raises(IdRecipeError):
            derive_id("x.v1", *bad_parts)  # type: ignore[arg-type]
    with pytest.raises(IdRecipeError):
        derive_id("x|v1", "a")
    with pytest.raises(IdRecipeError):
        derive_id("x.v1", "a", length=16)  # type: ignore[arg-type]


def test_every_recipe_is_in_the_module_table_and_exported() -> None:
    module = inspect.getmodule(contracts.derive_id)
    assert module is not None and module.__doc__ is not None
    tree = ast.parse(inspect.getsource(module))
    public = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    helpers = {"canon_compact", "canon_default", "sha256_hex", "sort_evidence_refs", "case_pins"}
    table = module.__doc__
    missing = [name for name in public if name not in helpers and f"\n{name} " not in table]
    assert missing == []
    assert [name for name in public if name not in contracts.__all__] == []


def test_decision_content_digest_ignores_only_run_specific_fields() -> None:
    from fraudrt.contracts import df_decision_content_digest

    base = {"decision_id": "a" * 32, "action": "REVIEW", "score": 0.5,
            "source_event": {"event_id": "e", "stream": "s", "shard_id": "shardId-0", "sequence_number": "1"},
            "posture": {"mode": "NORMAL", "posture_seq": 1, "decided_at_utc": "t0"},
            "features": {"ofp_watermark_utc": "w0", "graph_version": "g"},
            "timings": {"admitted_at_utc": "t1", "decided_at_utc": "t2", "admit_to_decision_ms": 3.0}}
    elsewhere = {**base, "source_event": {**base["source_event"], "stream": "t1-s", "shard_id": "shardId-7",
                                          "sequence_number": "9"},
                 "posture": {**base["posture"], "posture_seq": 4, "decided_at_utc": "t9"},
                 "features": {**base["features"], "ofp_watermark_utc": "w9"}, "timings": {"admitted_at_utc": "x"}}
    assert df_decision_content_digest(base) == df_decision_content_digest(elsewhere)
    for change in ({"action": "DECLINE"}, {"score": 0.6}, {"posture": {**base["posture"], "mode": "DEGRADED_1"}},
                   {"features": {**base["features"], "graph_version": "h"}}):
        assert df_decision_content_digest({**base, **change}) != df_decision_content_digest(base)
    assert len(df_decision_content_digest(base)) == 32


def test_feature_snapshot_digest_is_order_free_and_value_exact() -> None:
    from fraudrt.contracts import df_feature_snapshot_digest

    a = df_feature_snapshot_digest({"velocity.x": 1.0, "graph.y": 2})
    assert a == df_feature_snapshot_digest({"graph.y": 2.0, "velocity.x": 1})
    assert a != df_feature_snapshot_digest({"velocity.x": 1.0000001, "graph.y": 2})


def test_config_digest_ignores_credentials_and_sees_configuration() -> None:
    from fraudrt.contracts import config_digest

    base = {"s3": {"endpoint_url": "http://127.0.0.1:9000", "access_key_id": "AK", "secret_access_key": "S1"},
            "postgres": {"dsn": "postgresql://u:pw1@127.0.0.1:5432/db"}, "streams": {"prefix": ""}}
    rotated = {"s3": {"endpoint_url": "http://127.0.0.1:9000", "access_key_id": "AK2", "secret_access_key": "S2"},
               "postgres": {"dsn": "postgresql://u:other@127.0.0.1:5432/db"}, "streams": {"prefix": ""}}
    moved = {**base, "streams": {"prefix": "x-"}}
    assert config_digest(base) == config_digest(rotated)
    assert config_digest(base) != config_digest(moved)
    assert len(config_digest(base)) == 64
