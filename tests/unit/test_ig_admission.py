"""IG admission checks, policy loading, API keys and the OpenAPI document: pure logic, no substrate."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fraudrt.config import Settings, config_dir, load_settings, project_root
from fraudrt.contracts import decode_envelope, encode_envelope, ig_dedupe_key, payload_hash
from fraudrt.control_ingress.ingestion_gate import (
    REASON_CODES,
    Admissible,
    KeyRing,
    PolicyError,
    Rejected,
    api_keys_path,
    evaluate,
    ig_api_key,
    load_api_keys,
    load_policy,
    openapi_document,
    quarantine_ids,
)

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from tests.support.hostile import hostile_event

pytestmark = pytest.mark.unit

RUN = "platform_20260102T030405Z"
FALLBACK = "platform_20000101T000000Z"


def _hex(n: int) -> str:
    return hashlib.sha256(uuid.uuid4().bytes).hexdigest()[:n]


def envelope(event_type: str = "s3_event_stream_with_fraud_6B", **over: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "event_id": _hex(64), "event_type": event_type, "ts_utc": "2026-01-02T03:04:05.123456Z",
        "platform_run_id": RUN, "scenario_run_id": _hex(32), "manifest_fingerprint": _hex(64),
        "parameter_hash": _hex(64), "seed": 42, "scenario_id": "baseline_v1", "run_id": _hex(32),
        "producer": "world_stream_producer",
        "payload": {"flow_id": 7, "event_seq": 0, "event_type": "AUTH_REQUEST", "ts_utc": "2026-01-02T03:04:05.123456Z",
                    "amount": 12.5, "fraud_flag": False, "campaign_id": None},
    }
    env.update(over)
    return env


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings("embedded", env={"FRAUDRT_STREAM_PREFIX": "u-"})


@pytest.fixture(scope="module")
def policy(settings: Settings) -> Any:
    return load_policy(settings)


def test_valid_engine_event_is_admissible_with_route_and_keys(policy: Any) -> None:
    env = envelope()
    res = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(res, Admissible), res
    assert res.rule.event_class == "traffic_fraud"
    assert res.rule.route.stream == "u-fp.bus.traffic.fraud.v1"
    assert res.dedupe_key == ig_dedupe_key(RUN, "traffic_fraud", env["event_id"])
    assert res.payload_hash == payload_hash(env["event_type"], None, env["payload"])
    # partition key = sha256(str(first non-empty of payload.flow_id, ...))
    assert res.partition_key == hashlib.sha256(b"7").hexdigest()
    assert json.loads(res.data)["event_id"] == env["event_id"]


def test_every_routed_stream_is_a_seed_stream(settings: Settings, policy: Any) -> None:
    assert set(policy.streams) <= set(settings.streams.all_names())
    routes = {t: r.route.stream for t, r in policy.rules.items()}
    assert routes["arrival_events_5B"] == "u-fp.bus.context.arrival_events.v1"
    assert routes["decision_response"] == "u-fp.bus.rtdl.v1"
    assert routes["case_trigger"] == "u-fp.bus.case.v1"


@pytest.mark.parametrize(("doc", "reason"), [
    ({"event_id": "x"}, "ENVELOPE_INVALID"),
    (42, "ENVELOPE_INVALID"),
    ([1, 2], "ENVELOPE_INVALID"),
    ("not json at all", "ENVELOPE_INVALID"),
])
def test_malformed_envelopes_are_quarantined(policy: Any, doc: Any, reason: str) -> None:
    data = doc.encode() if isinstance(doc, str) else raw(doc)
    res = evaluate(3, data, policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == reason
    assert res.index == 3
    assert res.platform_run_id == FALLBACK


def test_unknown_field_quarantined_and_payload_never_kept(policy: Any) -> None:
    env = envelope(secret_extra="leak")
    env["payload"]["marker"] = "PAYLOAD-MARKER"
    res = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "ENVELOPE_INVALID"
    assert "secret_extra" in res.detail
    assert res.platform_run_id == RUN  # readable run id: evidence goes under the event's run
    assert "payload" not in res.kept and "secret_extra" not in res.kept
    assert set(res.dropped) == {"payload", "secret_extra"}
    assert "PAYLOAD-MARKER" not in json.dumps(res.kept)


@pytest.mark.parametrize("pin", ["run_id", "scenario_run_id", "seed", "parameter_hash", "scenario_id"])
def test_missing_pin_for_traffic_is_pins_missing(policy: Any, pin: str) -> None:
    env = envelope()
    del env[pin]
    res = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "PINS_MISSING", res
    assert pin in res.detail


def test_missing_platform_run_id_is_pins_missing_under_fallback(policy: Any) -> None:
    env = envelope()
    del env["platform_run_id"]
    res = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "PINS_MISSING"
    assert res.platform_run_id == FALLBACK


def _decision_payload() -> dict[str, Any]:
    return {"decision_id": _hex(32), "decision_kind": "fraud_decision_v0", "bundle_ref": {}, "pins": {},
            "decided_at_utc": "2026-01-02T03:04:05.123456Z", "source_event": {"event_id": "abc"}, "decision": {}}


def test_rtdl_needs_no_run_id_but_needs_schema_version(policy: Any) -> None:
    env = envelope("decision_response", payload=_decision_payload(), schema_version="v1")
    del env["run_id"]
    ok = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(ok, Admissible), ok
    assert ok.partition_key == hashlib.sha256(b"abc").hexdigest()  # payload.source_event.event_id
    del env["schema_version"]
    res = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "SCHEMA_VERSION_REQUIRED"
    env["schema_version"] = "v2"
    res = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "SCHEMA_VERSION_NOT_ALLOWED"


def test_unknown_event_type_is_schema_policy_missing(policy: Any) -> None:
    res = evaluate(0, raw(envelope("no_such_type")), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "SCHEMA_POLICY_MISSING"


@pytest.mark.parametrize(("field", "value"), [
    ("flow_id", "7"), ("flow_id", True), ("amount", "1.0"), ("fraud_flag", 1), ("campaign_id", 3), ("flow_id", None),
])
def test_payload_type_errors_are_schema_fail(policy: Any, field: str, value: Any) -> None:
    env = envelope()
    env["payload"][field] = value
    res = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "SCHEMA_FAIL", res
    assert field in res.detail


def test_missing_required_payload_field_is_schema_fail(policy: Any) -> None:
    env = envelope()
    del env["payload"]["event_seq"]
    res = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "SCHEMA_FAIL" and "event_seq" in res.detail


def _policy_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "ig"
    shutil.copytree(config_dir() / "ig", folder)
    return folder


def test_partition_key_missing(tmp_path: Path, settings: Settings) -> None:
    folder = _policy_copy(tmp_path)
    text = (folder / "partitioning_profiles.yaml").read_text()
    text = text.replace("key_precedence: [event_id, manifest_fingerprint]", "key_precedence: [payload.nothing]")
    (folder / "partitioning_profiles.yaml").write_text(text)
    policy = load_policy(settings, folder)
    res = evaluate(0, raw(envelope("ig.audit.verify", schema_version="v1", payload={})), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "PARTITION_KEY_MISSING"


def test_policy_inconsistencies_fail_at_load(tmp_path: Path, settings: Settings) -> None:
    folder = _policy_copy(tmp_path)
    path = folder / "schema_policy.yaml"
    original = path.read_text()
    path.write_text(original.replace("class: traffic_fraud", "class: traffic_baseline", 1))
    with pytest.raises(PolicyError, match="class"):
        load_policy(settings, folder)
    path.write_text(original.replace("amount: {type: number}", "amount: {type: decimal}", 1))
    with pytest.raises(PolicyError, match="unknown type"):
        load_policy(settings, folder)
    path.write_text(original)
    prof = folder / "partitioning_profiles.yaml"
    prof.write_text(prof.read_text().replace("stream: audit", "stream: fp.bus.nowhere"))
    with pytest.raises(PolicyError, match="logical"):
        load_policy(settings, folder)


def test_policy_digest_changes_with_content(tmp_path: Path, settings: Settings, policy: Any) -> None:
    folder = _policy_copy(tmp_path)
    assert load_policy(settings, folder).rev.content_digest == policy.rev.content_digest
    path = folder / "schema_policy.yaml"
    path.write_text(path.read_text().replace("revision: fraudrt-v1", "revision: fraudrt-v2"))
    assert load_policy(settings, folder).rev.content_digest != policy.rev.content_digest


def test_quarantine_ids_are_deterministic_and_discriminated() -> None:
    a = quarantine_ids(RUN, "e1", "SCHEMA_FAIL", "h1")
    assert a == quarantine_ids(RUN, "e1", "SCHEMA_FAIL", "h1")
    assert a != quarantine_ids(RUN, "e1", "PINS_MISSING", "h1")
    assert a != quarantine_ids(RUN, "e1", "SCHEMA_FAIL", "h2")
    assert a != quarantine_ids(FALLBACK, "e1", "SCHEMA_FAIL", "h1")
    assert all(len(x) == 32 for x in a)


# ---------------------------------------------------------------- API keys


def test_keys_file_created_0600_and_first_key_returned(tmp_path: Path) -> None:
    s = load_settings("embedded", env={"FRAUDRT_HOME": str(tmp_path)})
    env: dict[str, str] = {}
    keys = load_api_keys(s, env)
    path = api_keys_path(s)
    assert path == tmp_path / "secrets" / "ig_api_keys"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(keys) == 1 and len(keys[0]) >= 32
    assert load_api_keys(s, env) == keys  # stable: not regenerated
    os.environ.pop("IG_API_KEYS", None)
    assert ig_api_key(s) == keys[0]


def test_env_keys_win_and_ring_checks_every_key(tmp_path: Path) -> None:
    s = load_settings("embedded", env={"FRAUDRT_HOME": str(tmp_path)})
    keys = load_api_keys(s, {"IG_API_KEYS": "alpha, beta"})
    assert keys == ["alpha", "beta"]
    assert not (tmp_path / "secrets").exists()
    ring = KeyRing(keys)
    a, b = ring.authenticate("alpha"), ring.authenticate("beta")
    assert a is not None and b is not None and a.principal != b.principal
    assert "alpha" not in msgspec.json.encode(a).decode()  # the key itself is never recorded
    assert ring.authenticate("gamma") is None and ring.authenticate(None) is None and ring.authenticate("") is None


# ---------------------------------------------------------------- OpenAPI


def test_openapi_document_matches_routes() -> None:
    from fraudrt.control_ingress.ingestion_gate import IgHttp

    http = IgHttp(None, KeyRing(["k"]), dict, max_body_bytes=1000, max_batch_events=10,  # type: ignore[arg-type]
                  on_dependency_down=lambda exc: None)
    app = http.app()
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()  # type: ignore[union-attr]
              if r.method != "HEAD"}
    doc = openapi_document(10, 1000)
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    assert doc["paths"]["/v1/ingest/push"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "oneOf"][1]["properties"]["events"]["maxItems"] == 10


# ---------------------------------------------------------------- limits below IG, and arbitrary input


def test_an_event_id_holding_nul_is_envelope_invalid(policy: Any) -> None:
    """Valid JSON that Postgres text cannot store: a quarantine with a reason, not a failed statement."""
    env = envelope(event_id="abc\u0000def")
    res = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "ENVELOPE_INVALID", res
    assert "event_id" in res.detail and "NUL" in res.detail
    assert res.event_id == "abc\u0000def"  # the evidence keeps the exact value


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_nesting_deeper_than_the_decoder_follows_is_quarantined_not_raised(policy: Any, depth: int) -> None:
    env = envelope()
    text = raw(env).decode()
    deep = '{"x":' * depth + "1" + "}" * depth
    data = text.replace('"amount": 12.5', f'"amount": 12.5, "deep": {deep}').encode()
    res = evaluate(4, data, policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "NESTING_TOO_DEEP", res
    assert res.index == 4 and res.platform_run_id == FALLBACK


def test_an_event_over_the_kinesis_record_limit_is_event_too_large(policy: Any) -> None:
    env = envelope()
    env["payload"]["note"] = "x" * (1024 * 1024)  # allowed by the schema (additional properties)
    res = evaluate(0, raw(env), policy, FALLBACK)
    assert isinstance(res, Rejected) and res.reason == "EVENT_TOO_LARGE", res
    assert "1048576" in res.detail
    # Just under the limit (compact envelope + 64-char partition key) is admissible.
    small = envelope()
    base = len(encode_envelope(decode_envelope(raw(small)))) + len('"note":"",') + 64
    small["payload"]["note"] = "x" * (1024 * 1024 - base)
    ok = evaluate(0, raw(small), policy, FALLBACK)
    assert isinstance(ok, Admissible), ok
    assert len(ok.data) + len(ok.partition_key) == 1024 * 1024


@st.composite
def _hostile(draw: st.DrawFn) -> bytes:
    """A hostile event (`tests.support.hostile`), or raw bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=200))
    return draw(hostile_event(envelope)).encode()


@hsettings(max_examples=300, deadline=None)
@given(data=_hostile())
def test_evaluate_never_raises_and_only_admits_what_can_be_stored_and_published(policy: Any, data: bytes) -> None:
    res = evaluate(0, data, policy, FALLBACK)
    assert isinstance(res, Admissible | Rejected)
    if isinstance(res, Rejected):
        assert res.reason in REASON_CODES and res.detail
        assert res.platform_run_id == FALLBACK or res.platform_run_id.startswith("platform_")
    else:
        assert "\u0000" not in res.env.event_id
        assert len(res.data) + len(res.partition_key) <= 1024 * 1024
        assert decode_envelope(res.data) == res.env  # what goes on the bus decodes back
