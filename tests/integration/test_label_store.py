"""The Label Store on Postgres: idempotency outcomes, append-only, as-of with CONFLICT, and the actor's
refusals, with assertions arriving on a private case stream as every source sends them."""

from __future__ import annotations

import sys
from typing import Any

import asyncpg
import msgspec
import pytest

from fraudrt.config import Settings, project_root
from fraudrt.contracts import EvidenceRef, LabelAssertionPayload, LabelSubjectKey, case_envelope, make_label_assertion
from fraudrt.runtime.bus import KinesisBus

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.case_labels.label_store import outcome_of, reader, write_assertions
from tests.support.case_lane import CASE_SQL, run_pins, running_plane, ts
from tests.support.harness import mint_run_id, open_pool, put, wait_for

pytestmark = pytest.mark.integration


def _label(run: str, *, event: str, value: str, source: str, actor: str | None, observed: float,
           timeline: str, label_type: str = "fraud_disposition") -> LabelAssertionPayload:
    return make_label_assertion(
        case_timeline_event_id=timeline, subject=LabelSubjectKey(platform_run_id=run, event_id=event),
        pins=run_pins(run), label_type=label_type, label_value=value, effective_time=ts(0),  # type: ignore[arg-type]
        observed_time=ts(observed), source_type=source, actor_id=actor,  # type: ignore[arg-type]
        evidence_refs=[EvidenceRef(ref_type="EXTERNAL_REF", ref_id=f"{source}:{event}")])


async def _migrated(pool: Any) -> None:
    from fraudrt.runtime.packs import apply_migrations

    async with pool.acquire() as conn:
        await apply_migrations(conn, *CASE_SQL)


async def test_writer_boundary_outcomes_accepted_duplicate_mismatch(settings: Settings) -> None:
    run = mint_run_id()
    first = _label(run, event="e1", value="FRAUD_CONFIRMED", source="HUMAN", actor="HUMAN::alice", observed=10,
                   timeline="a" * 32)
    changed = _label(run, event="e1", value="LEGIT_CONFIRMED", source="HUMAN", actor="HUMAN::alice", observed=10,
                     timeline="a" * 32)
    assert changed.label_assertion_id == first.label_assertion_id
    async with open_pool(settings) as pool:
        await _migrated(pool)
        async with pool.acquire() as conn, conn.transaction():
            one = await write_assertions(conn, run, [first])
        async with pool.acquire() as conn, conn.transaction():
            # Same batch: a copy and a changed copy of an id the store holds, and a copy within the batch.
            two = await write_assertions(conn, run, [first, changed, first])
        stored = await pool.fetch(
            "SELECT label_value, payload_hash FROM ls_label_assertions WHERE platform_run_id = $1", run)
        mismatches = await pool.fetch("SELECT * FROM cl_mismatches WHERE platform_run_id = $1", run)
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await pool.execute("UPDATE ls_label_assertions SET label_value = 'LEGIT_CONFIRMED' "
                               "WHERE platform_run_id = $1", run)
    assert outcome_of(one, first) == "ACCEPTED"
    assert [outcome_of(two, a) for a in two.new + two.duplicates + two.mismatches] == [
        "DUPLICATE", "DUPLICATE", "MISMATCH"]
    assert [(r["label_value"], r["payload_hash"]) for r in stored] == [("FRAUD_CONFIRMED", first.payload_hash)]
    assert len(mismatches) == 1 and mismatches[0]["seen_hash"] == changed.payload_hash
    assert mismatches[0]["stored_hash"] == first.payload_hash


async def test_as_of_knows_only_what_was_observed_and_says_conflict(settings: Settings) -> None:
    run = mint_run_id()
    human = _label(run, event="e1", value="FRAUD_CONFIRMED", source="HUMAN", actor="HUMAN::alice", observed=10,
                   timeline="1" * 32)
    chargeback = _label(run, event="e1", value="LEGIT_CONFIRMED", source="EXTERNAL", actor="EXTERNAL::cb",
                        observed=20, timeline="2" * 32)
    correction = _label(run, event="e1", value="LEGIT_CONFIRMED", source="HUMAN", actor="HUMAN::alice",
                        observed=30, timeline="3" * 32)
    auto = _label(run, event="e1", value="FRAUD_SUSPECTED", source="AUTO", actor="SYSTEM::case_mgmt", observed=1,
                  timeline="4" * 32)
    other_type = _label(run, event="e1", value="CHARGEBACK", source="EXTERNAL", actor="EXTERNAL::cb", observed=5,
                        timeline="5" * 32, label_type="chargeback_status")
    async with open_pool(settings) as pool:
        await _migrated(pool)
        async with pool.acquire() as conn, conn.transaction():
            await write_assertions(conn, run, [human, chargeback, correction, auto, other_type])
        answers = {t: (await reader.labels_as_of(pool, run, ["e1", "e2"], "fraud_disposition", ts(t)))
                   for t in (0, 5, 10, 19, 20, 30)}
        with_auto = await reader.labels_as_of(pool, run, ["e1"], "fraud_disposition", ts(5), include_auto=True)
        history = await reader.assertions_for(pool, run, ["e1"])
    status = {t: (a["e1"].status, a["e1"].label_value) for t, a in answers.items()}
    assert status == {0: ("NOT_FOUND", None), 5: ("NOT_FOUND", None), 10: ("RESOLVED", "FRAUD_CONFIRMED"),
                      19: ("RESOLVED", "FRAUD_CONFIRMED"), 20: ("CONFLICT", None), 30: ("RESOLVED", "LEGIT_CONFIRMED")}
    assert {c.source_type for c in answers[20]["e1"].candidates} == {"HUMAN", "EXTERNAL"}
    assert answers[30]["e1"].selected_assertion_id == correction.label_assertion_id
    assert answers[30]["e2"].status == "NOT_FOUND"
    assert (with_auto["e1"].status, with_auto["e1"].label_value) == ("RESOLVED", "FRAUD_SUSPECTED")
    assert [a.label_assertion_id for a in history if not a.training_eligible] == [auto.label_assertion_id]
    assert len(history) == 5


async def test_the_actor_takes_every_source_and_refuses_what_does_not_hold(private_streams: Settings) -> None:
    settings, run = private_streams, mint_run_id()
    good = [_label(run, event=f"e{i}", value="FRAUD_CONFIRMED", source=src, actor=actor, observed=i,
                   timeline=f"{i:032x}")
            for i, (src, actor) in enumerate([("HUMAN", "HUMAN::alice"), ("EXTERNAL", "EXTERNAL::cb"),
                                              ("AUTO", "SYSTEM::case_mgmt")])]
    wrong_value = msgspec.structs.replace(good[0], label_value="CHARGEBACK")  # not a fraud_disposition value
    changed = _label(run, event="e0", value="LEGIT_CONFIRMED", source="HUMAN", actor="HUMAN::alice", observed=0,
                     timeline=f"{0:032x}")
    stream = settings.streams.name("case")
    records = [case_envelope(a, ts_utc=a.effective_time, producer="test") for a in [*good, wrong_value]]
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        await put(bus, stream, [d for _, _, d in records] * 2, keys=[k for _, k, _ in records] * 2)
        async with running_plane(settings, run, pool, bus, components=("label_store",)) as plane:
            ls = plane.components["label_store"]

            async def metrics() -> dict[str, Any]:
                return ls.metrics()

            await wait_for(metrics, lambda m: m.get("accepted") == 3 and m.get("dead_letters") == 2,
                           what="3 accepted, the invalid one dead-lettered (twice on the bus)")
            _, key, data = case_envelope(changed, ts_utc=changed.effective_time, producer="test")
            await put(bus, stream, [data], keys=[key])
            m = await wait_for(metrics, lambda m: m.get("mismatches") == 1, what="the changed copy")
            health = ls.health()
            dead = await pool.fetch("SELECT reason FROM rt_dead_letters WHERE actor = 'label_store' "
                                    "AND platform_run_id = $1", run)
    assert m["duplicates"] == 3 and m["accepted_human"] == 1 and m["accepted_external"] == 1
    assert m["accepted_auto"] == 1
    assert {r["reason"].split(":")[0] for r in dead} == {"LABEL_VALUE_INVALID"}
    assert health[0] == "AMBER"
