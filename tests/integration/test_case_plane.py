"""The case plane on the real substrate: CaseTrigger -> fp.bus.case.v1 -> Case Management -> Label Store.

Decision-lane envelopes are put on a private `rtdl` / `audit` stream as DF, AL and DLA publish them.
"""

from __future__ import annotations

import sys
from typing import Any

import asyncpg
import msgspec
import pytest

from fraudrt.config import Settings, project_root
from fraudrt.contracts import (
    CASE_TRIGGER,
    LABEL_ASSERTION,
    CaseTriggerPayload,
    case_envelope,
    case_event_decoder,
    decode_case_payload,
)
from fraudrt.runtime.bus import KinesisBus

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.case_labels.label_store import reader as labels
from tests.support.case_lane import audit, decision, outcome, run_pins, running_plane
from tests.support.harness import mint_run_id, open_pool, put, read_all, wait_for

pytestmark = pytest.mark.integration


async def _case_events(bus: KinesisBus, settings: Settings, run: str) -> list[Any]:
    out = []
    for r in await read_all(bus, settings.streams.name("case")):
        event = case_event_decoder.decode(r.data)
        if event.platform_run_id == run:
            out.append((event, decode_case_payload(event)))
    return out


async def _count(pool: Any, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args))


async def test_only_escalated_evidence_opens_cases_and_each_once(private_streams: Settings) -> None:
    settings, run = private_streams, mint_run_id()
    pins = run_pins(run)
    approve_low = decision(pins, 1, action="APPROVE", score=0.05)
    step_up = decision(pins, 2, action="STEP_UP", score=0.4)
    review = decision(pins, 3, action="REVIEW", score=0.6)
    decline = decision(pins, 4, action="DECLINE", score=0.97)
    approve_high = decision(pins, 5, action="APPROVE", score=0.85)  # over escalate_score_at_least (0.8)
    approve_failed = decision(pins, 6, action="APPROVE", score=0.1)
    approve_unresolved = decision(pins, 7, action="APPROVE", score=0.1)
    decided = [approve_low, step_up, review, decline, approve_high, approve_failed, approve_unresolved]
    lane = [d.envelope for d in decided] + [
        outcome(pins, approve_low.payload, "EXECUTED"), outcome(pins, approve_failed.payload, "FAILED"),
        outcome(pins, decline.payload, "DENIED")]
    audits = [audit(pins, approve_low.payload, "RESOLVED"), audit(pins, approve_unresolved.payload, "UNRESOLVED")]
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        # Every record twice: the bus may carry a duplicate after a crash, and it must stay harmless.
        await put(bus, settings.streams.name("rtdl"), lane + lane)
        await put(bus, settings.streams.name("audit"), audits + audits)
        async with running_plane(settings, run, pool, bus) as plane:
            cm = plane.case_mgmt
            await wait_for(lambda: _count(pool, "SELECT count(*) FROM ls_label_assertions WHERE platform_run_id = $1",
                                          run), lambda n: n >= 3, what="AUTO labels of the 3 escalated decisions")
            ct = plane.components["case_trigger"]
            await wait_for(lambda: _async(ct.metrics()), lambda m: m.get("triggers_seen") == 2 * 12,
                           what="every decision-lane record evaluated")
            events = await _case_events(bus, settings, run)
            ct_metrics, cm_metrics, ls_metrics = ct.metrics(), cm.metrics(), plane.components["label_store"].metrics()
            health = {n: c.health() for n, c in plane.components.items()}
            cases = await pool.fetch("SELECT * FROM cm_cases WHERE platform_run_id = $1 ORDER BY subject_id", run)
            assertions = await pool.fetch("SELECT * FROM ls_label_assertions WHERE platform_run_id = $1", run)
            now_known = await labels.labels_as_of(pool, run, [review.payload.source_event.event_id],
                                                  "fraud_disposition", "2099-01-01T00:00:00.000000Z")
            with_auto = await labels.labels_as_of(pool, run, [review.payload.source_event.event_id],
                                                  "fraud_disposition", "2099-01-01T00:00:00.000000Z",
                                                  include_auto=True)

    triggers = [p for e, p in events if e.event_type == CASE_TRIGGER]
    assert len(triggers) == 5, [t.trigger_payload.escalation_reasons for t in triggers]
    by_flow = {t.trigger_payload.source_event_id: t for t in triggers}
    expected = [(review, "DECISION_ESCALATION"), (decline, "DECISION_ESCALATION"),
                (approve_high, "DECISION_ESCALATION"), (approve_failed, "ACTION_FAILURE"),
                (approve_unresolved, "ANOMALY")]
    assert {d.payload.source_event.event_id: t for d, t in expected} == {
        k: v.trigger_type for k, v in by_flow.items()}
    assert by_flow[approve_high.payload.source_event.event_id].trigger_payload.escalation_reasons == [
        "SCORE_AT_LEAST_0.8"]
    assert by_flow[decline.payload.source_event.event_id].trigger_payload.escalation_reasons == [
        "ACTION_DECLINE", "SCORE_AT_LEAST_0.8"]
    # One case per flow that escalated; APPROVE at a low score, STEP_UP, an EXECUTED or DENIED action and
    # a RESOLVED audit chain open nothing.
    assert len(cases) == 5
    assert {c["subject_id"] for c in cases} == set(by_flow)
    assert all(c["state"] == "OPEN" and c["last_seq"] >= 1 for c in cases)
    assert ct_metrics["triggers_seen"] == 24 and ct_metrics["triggers_emitted"] == 5
    assert ct_metrics["duplicates"] == 5 and ct_metrics["mismatches"] == 0
    assert cm_metrics["cases_created"] == 5 and cm_metrics["triggers"] == 5
    # The platform's own label, on escalated decisions only, is AUTO and never training truth.
    assert len(assertions) == 3 and ls_metrics["accepted"] == 3
    assert {a["source_type"] for a in assertions} == {"AUTO"} and not any(a["training_eligible"] for a in assertions)
    assert len([p for e, p in events if e.event_type == LABEL_ASSERTION]) == 3
    assert now_known[review.payload.source_event.event_id].status == "NOT_FOUND"
    assert with_auto[review.payload.source_event.event_id].label_value == "FRAUD_SUSPECTED"
    assert all(h[0] == "GREEN" for h in health.values()), health


async def _async(value: Any) -> Any:
    return value


async def test_changed_or_forged_triggers_are_never_applied(private_streams: Settings) -> None:
    settings, run = private_streams, mint_run_id()
    pins = run_pins(run)
    review = decision(pins, 11, action="REVIEW", score=0.7)
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        await put(bus, settings.streams.name("rtdl"), [review.envelope])
        async with running_plane(settings, run, pool, bus) as plane:
            await wait_for(lambda: _async(plane.case_mgmt.metrics()), lambda m: m.get("cases_created") == 1,
                           what="the case")
            original = next(p for e, p in await _case_events(bus, settings, run) if e.event_type == CASE_TRIGGER)
            assert isinstance(original, CaseTriggerPayload)
            # Same trigger id, other content, hash recomputed: a changed copy (MISMATCH), recorded, not applied.
            details = msgspec.structs.replace(original.trigger_payload, score=0.01)
            changed = msgspec.structs.replace(original, trigger_payload=details)
            from fraudrt.contracts._cases import _trigger_hash

            changed = msgspec.structs.replace(changed, payload_hash=_trigger_hash(
                changed.case_subject_key, changed.trigger_type, changed.source_ref_id, changed.pins,
                changed.observed_time, changed.evidence_refs, changed.trigger_payload))
            # A forged one: content edited, hash left as it was.
            forged = msgspec.structs.replace(original, trigger_payload=details)
            case_stream = settings.streams.name("case")
            for t in (changed, forged):
                _, key, data = case_envelope(t, ts_utc=t.trigger_payload.event_time, producer="test")
                await put(bus, case_stream, [data], keys=[key])
            await wait_for(lambda: _async(plane.case_mgmt.metrics()),
                           lambda m: m.get("mismatches") == 1 and m.get("dead_letters") == 1,
                           what="mismatch and dead letter")
            health = plane.case_mgmt.health()
            dead = await pool.fetch("SELECT reason FROM rt_dead_letters WHERE actor = 'case_mgmt' AND "
                                    "platform_run_id = $1", run)
            case = await pool.fetchrow("SELECT * FROM cm_cases WHERE platform_run_id = $1", run)
            mismatch = await pool.fetchrow("SELECT * FROM cl_mismatches WHERE platform_run_id = $1", run)
            for sql in ("UPDATE cm_timeline SET actor_id = 'x' WHERE platform_run_id = $1",
                        "DELETE FROM cm_timeline WHERE platform_run_id = $1"):
                with pytest.raises(asyncpg.RaiseError, match="cm_timeline is append-only"):
                    await pool.execute(sql, run)
    assert [r["reason"].split(":")[0] for r in dead] == ["PAYLOAD_HASH_MISMATCH"]
    assert case["max_score"] == pytest.approx(0.7) and case["trigger_count"] == 1  # the original stands
    assert mismatch["kind"] == "case_trigger" and mismatch["stored_hash"] == original.payload_hash
    assert health[0] == "AMBER" and any(r.startswith("PAYLOAD_MISMATCHES") for r in health[1])
