"""The investigator API against a live case plane: auth, the workflow, labels that reach the Label Store,
idempotent retries, concurrent edits of one case, and hostile input that never gets a 5xx."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.case_labels.case_mgmt import read_api_file
from tests.support.case_lane import Plane, api_call, held, plane_with_cases
from tests.support.harness import wait_for
from tests.support.hostile import json_values, nested, odd_text

pytestmark = pytest.mark.integration

FLOWS = 3


@pytest.fixture
async def plane(substrate: Any, tmp_path: Path) -> AsyncIterator[Plane]:
    async with held(plane_with_cases(substrate, tmp_path, FLOWS)) as p:
        yield p


async def _cases(plane: Plane, query: str = "") -> list[dict[str, Any]]:
    status, body = await api_call(plane, "GET", f"/v1/cases{query}")
    assert status == 200, body
    cases: list[dict[str, Any]] = body["cases"]
    return cases


async def test_no_key_or_a_wrong_key_is_a_401_and_the_document_is_public(plane: Plane) -> None:
    for headers in ({}, {"X-Case-Api-Key": "wrong"}, {"X-Case-Api-Key": ""}, {"X-IG-Api-Key": plane.api_key or ""}):
        for method, path in (("GET", "/v1/cases"), ("GET", "/v1/ops/health"), ("POST", f"/v1/cases/{'0' * 32}/notes")):
            status, body = await api_call(plane, method, path, {"actor": "eve", "text": "x"}, headers=headers)
            assert (status, body) == (401, {"error": "UNAUTHORIZED"}), (headers, path)
    status, doc = await api_call(plane, "GET", "/v1/openapi.json", headers={})
    assert status == 200 and doc["components"]["securitySchemes"]["ApiKey"]["name"] == "X-Case-Api-Key"
    status, page = await api_call(plane, "GET", "/console", headers={})
    assert status == 200 and b"X-Case-Api-Key" in page
    status, health = await api_call(plane, "GET", "/v1/ops/health")
    assert status == 200 and health["state"] == "GREEN"
    # Where an operator finds it: the run's case_mgmt/api.json.
    where = read_api_file(plane.settings, plane.run)
    assert where["url"] == plane.api_url and where["host"] == "127.0.0.1"
    assert plane.api_key and plane.api_key not in json.dumps(where)


async def test_the_workflow_the_decision_evidence_and_a_label_that_reaches_the_label_store(plane: Plane) -> None:
    queue = await _cases(plane, "?state=OPEN&min_score=0.65")
    assert [c["max_score"] for c in queue] == [pytest.approx(0.7)]
    case = queue[0]
    cid, version = case["case_id"], case["version"]
    status, detail = await api_call(plane, "GET", f"/v1/cases/{cid}")
    assert status == 200
    assert [e["event_type"] for e in detail["timeline"]] == ["CASE_TRIGGERED", "LABEL_ASSERTED"]
    assert [e["seq"] for e in detail["timeline"]] == [1, 2]
    assert detail["timeline"][0]["event_time"] == "2026-01-01T00:00:02.000000Z"  # the world's clock
    evidence = detail["evidence"][0]["trigger_payload"]
    assert evidence["action"] == "REVIEW" and evidence["reason_codes"] == ["HIGH_SCORE"]
    assert [f["name"] for f in evidence["top_features"]] == ["party_amount_sum_1h", "device_new_for_party"]
    assert detail["features"][0]["flow_id"] == 2
    event_id = evidence["source_event_id"]

    # Resolving before anyone reviewed it is not a step the workflow has.
    status, body = await api_call(plane, "POST", f"/v1/cases/{cid}/resolve", {"actor": "alice",
                                                                              "resolution": "LEGIT_CONFIRMED"})
    assert (status, body["error"]) == (409, "INVALID_TRANSITION")
    status, body = await api_call(plane, "POST", f"/v1/cases/{cid}/assign",
                                  {"actor": "alice", "assignee": "alice", "expected_version": version})
    assert status == 200 and body["case"]["state"] == "IN_REVIEW" and body["case"]["version"] == version + 1
    # A decision taken on the version before is refused, with the version to reload.
    status, body = await api_call(plane, "POST", f"/v1/cases/{cid}/notes",
                                  {"actor": "bob", "text": "stale", "expected_version": version})
    assert (status, body["error"], body["current_version"]) == (409, "VERSION_CONFLICT", version + 1)
    label = {"actor": "alice", "label_type": "fraud_disposition", "label_value": "LEGIT_CONFIRMED",
             "request_id": "lbl-1", "note": "customer confirmed"}
    status, first = await api_call(plane, "POST", f"/v1/cases/{cid}/labels", label)
    assert status == 200 and not first["duplicate"] and len(first["label_assertion_ids"]) == 1
    # A retry of the same request answers as the first time; other content under its id is refused.
    status, again = await api_call(plane, "POST", f"/v1/cases/{cid}/labels", label)
    assert status == 200 and again["duplicate"] and again["timeline_event"] == first["timeline_event"]
    status, body = await api_call(plane, "POST", f"/v1/cases/{cid}/labels", {**label, "label_value": "FRAUD_CONFIRMED"})
    assert (status, body["error"]) == (409, "IDEMPOTENCY_MISMATCH")
    status, body = await api_call(plane, "POST", f"/v1/cases/{cid}/labels",
                                  {**label, "request_id": "lbl-2", "label_value": "CHARGEBACK"})
    assert (status, body["error"]) == (400, "LABEL_VALUE_INVALID")
    status, body = await api_call(plane, "POST", f"/v1/cases/{cid}/labels",
                                  {**label, "request_id": "lbl-3", "event_ids": ["not-this-case"]})
    assert (status, body["error"]) == (409, "EVENT_NOT_IN_CASE")
    status, body = await api_call(plane, "POST", f"/v1/cases/{cid}/labels",
                                  {**label, "request_id": "lbl-4", "effective_time": "2026-02-30T00:00:00.000000Z"})
    assert (status, body["error"]) == (400, "INVALID_BODY")

    async def known() -> dict[str, Any]:
        status, body = await api_call(plane, "GET", f"/v1/labels?event_id={event_id}")
        assert status == 200
        return dict(body)

    # Through the outbox and the bus to the Label Store; the AUTO label does not count as truth.
    answer = await wait_for(known, lambda b: b["status"] == "RESOLVED", what="the HUMAN label in the Label Store")
    assert answer["label_value"] == "LEGIT_CONFIRMED" and answer["selected_assertion_id"] == first[
        "label_assertion_ids"][0]
    assert answer["candidates"][0]["actor_id"] == "HUMAN::alice"
    status, body = await api_call(plane, "POST", f"/v1/cases/{cid}/resolve",
                                  {"actor": "alice", "resolution": "LEGIT_CONFIRMED", "note": "false positive"})
    assert status == 200 and body["case"]["state"] == "RESOLVED" and body["case"]["resolved_at"]
    status, body = await api_call(plane, "POST", f"/v1/cases/{cid}/assign", {"actor": "bob", "assignee": "bob"})
    assert (status, body["error"]) == (409, "INVALID_TRANSITION")
    status, detail = await api_call(plane, "GET", f"/v1/cases/{cid}")
    assert [e["event_type"] for e in detail["timeline"]] == [
        "CASE_TRIGGERED", "LABEL_ASSERTED", "CASE_ASSIGNED", "LABEL_ASSERTED", "CASE_RESOLVED"]
    assert [e["seq"] for e in detail["timeline"]] == [1, 2, 3, 4, 5]
    assert detail["timeline"][3]["actor_id"] == "HUMAN::alice" and detail["timeline"][3]["event_time"] is None
    assert {a["source_type"] for a in detail["labels"]} == {"AUTO", "HUMAN"}
    assert detail["labels_now"][0]["label_value"] == "LEGIT_CONFIRMED"
    assert [c["case_id"] for c in await _cases(plane, "?state=RESOLVED")] == [cid]
    assert len(await _cases(plane, "?state=OPEN,IN_REVIEW")) == FLOWS - 1
    assert await _cases(plane, "?assignee=alice") == [] or (await _cases(plane, "?assignee=alice"))[0][
        "case_id"] == cid


async def test_pages_and_filters(plane: Plane) -> None:
    status, first = await api_call(plane, "GET", "/v1/cases?limit=2")
    assert status == 200 and len(first["cases"]) == 2 and first["next_cursor"]
    status, second = await api_call(plane, "GET", f"/v1/cases?limit=2&cursor={first['next_cursor']}")
    assert status == 200 and len(second["cases"]) == 1 and second["next_cursor"] is None
    ids = [c["case_id"] for c in first["cases"] + second["cases"]]
    assert len(set(ids)) == FLOWS
    assert len(await _cases(plane, "?trigger_type=DECISION_ESCALATION&action=REVIEW")) == FLOWS
    assert await _cases(plane, "?action=DECLINE") == []
    assert await _cases(plane, "?min_age_seconds=3600") == []
    assert len(await _cases(plane, "?max_age_seconds=3600")) == FLOWS
    for bad in ("?state=CLOSED", "?limit=0", "?limit=1.5", "?min_score=nan", "?cursor=x", "?assignee=%00",
                "?max_age_seconds=-1", "?trigger_type=OOPS"):
        status, body = await api_call(plane, "GET", f"/v1/cases{bad}")
        assert (status, body["error"]) == (400, "INVALID_QUERY"), bad
    for path in (f"/v1/cases/{'f' * 32}", "/v1/cases/NOT-A-CASE", "/v1/nothing"):
        status, body = await api_call(plane, "GET", path)
        assert status == 404, path
    status, body = await api_call(plane, "DELETE", "/v1/cases")
    assert status == 405


async def test_concurrent_edits_of_one_case_are_serialised(plane: Plane) -> None:
    case = (await _cases(plane))[0]
    cid, version = case["case_id"], case["version"]
    # Twenty investigators take the same case on the version they all saw: one wins, the others are told.
    results = await asyncio.gather(*(api_call(plane, "POST", f"/v1/cases/{cid}/assign",
                                              {"actor": f"inv{i}", "assignee": f"inv{i}", "expected_version": version})
                                     for i in range(20)))
    statuses = Counter(s for s, _ in results)
    assert statuses == {200: 1, 409: 19}, statuses
    winner = next(b for s, b in results if s == 200)["case"]["assignee"]
    assert {b["error"] for s, b in results if s == 409} == {"VERSION_CONFLICT"}
    # Thirty notes at once without a version: all applied, each its own place in the timeline.
    notes = await asyncio.gather(*(api_call(plane, "POST", f"/v1/cases/{cid}/notes",
                                            {"actor": f"inv{i}", "text": f"note {i}"}) for i in range(30)))
    assert [s for s, _ in notes] == [200] * 30
    _, detail = await api_call(plane, "GET", f"/v1/cases/{cid}")
    seqs = [e["seq"] for e in detail["timeline"]]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 2 + 1 + 30
    assert sorted(e["payload"]["request"]["text"] for e in detail["timeline"] if e["event_type"] == "NOTE_ADDED") == \
        sorted(f"note {i}" for i in range(30))
    assert detail["case"]["assignee"] == winner and detail["case"]["version"] == version + 31
    # A label and a resolution racing: both apply in some order, or the resolution waits for review; never half.
    label = api_call(plane, "POST", f"/v1/cases/{cid}/labels", {"actor": "x", "label_type": "fraud_disposition",
                                                               "label_value": "FRAUD_CONFIRMED"})
    resolve = api_call(plane, "POST", f"/v1/cases/{cid}/resolve", {"actor": "x", "resolution": "FRAUD_CONFIRMED"})
    (s1, _), (s2, _) = await asyncio.gather(label, resolve)
    assert (s1, s2) == (200, 200)
    _, detail = await api_call(plane, "GET", f"/v1/cases/{cid}")
    assert detail["case"]["state"] == "RESOLVED" and detail["case"]["version"] == version + 33


def _bodies() -> st.SearchStrategy[bytes]:
    valid = st.fixed_dictionaries({"actor": st.sampled_from(["alice", "bob"])}, optional={
        "text": odd_text, "assignee": odd_text, "label_type": st.sampled_from(["fraud_disposition", "x", ""]),
        "label_value": st.sampled_from(["FRAUD_CONFIRMED", "CHARGEBACK", "nope"]), "resolution": odd_text,
        "request_id": odd_text, "expected_version": st.one_of(st.integers(-(2**70), 2**70), odd_text),
        "event_ids": st.lists(odd_text, max_size=3), "effective_time": odd_text, "note": odd_text,
        "extra": json_values})
    return st.one_of(
        valid.map(lambda d: json.dumps(d).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        st.sampled_from([nested(5_000).encode(), b"{", b"\xff\xfe", b'{"actor": "a\\u0000b", "text": "x"}',
                         b'{"actor": "alice", "text": "' + b"y" * 70_000 + b'"}']),
    )


@hsettings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_hostile_input_is_a_4xx_with_a_reason_never_a_5xx(plane: Plane, data: Any) -> None:
    case_ids = [c["case_id"] for c in await _cases(plane)] + ["0" * 32, "%00", "x" * 300, uuid.uuid4().hex]
    cid = data.draw(st.sampled_from(case_ids))
    action = data.draw(st.sampled_from(["notes", "assign", "labels", "resolve"]))
    body = data.draw(_bodies())
    status, answer = await api_call(plane, "POST", f"/v1/cases/{cid}/{action}", raw=body)
    assert status < 500, (action, body[:200], answer)
    if status != 200:
        assert status in (400, 404, 409, 413) and answer["error"], answer
    query = data.draw(st.dictionaries(st.sampled_from(["state", "limit", "cursor", "min_score", "assignee", "action",
                                                       "max_age_seconds", "event_id", "as_of", "label_type"]),
                                      odd_text, max_size=3))
    for path in ("/v1/cases", "/v1/labels"):
        status, answer = await api_call(plane, "GET", path + "?" + "&".join(
            f"{k}={v.encode('utf-8', 'surrogatepass').hex() if len(v) > 300 else _q(v)}" for k, v in query.items()))
        assert status in (200, 400), (path, query, answer)
    assert plane.case_mgmt.api is not None and plane.case_mgmt.api.errors_5xx == 0


def _q(v: str) -> str:
    from urllib.parse import quote

    return quote(v.encode("utf-8", "surrogatepass"), safe="")
