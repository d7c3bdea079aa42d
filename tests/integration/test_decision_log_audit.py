"""The Decision Log/Audit on the real embedded substrate: decision-lane envelopes on a private rtdl stream,
the actor in process, its segments in SeaweedFS, its index and audit records in Postgres.

Every test reads the results back through the public reader, the outbox rows the relay would
publish to the audit stream, and the segment objects themselves.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from fraudrt.config import project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import (
    AuditRecordPayload,
    audit_chain_id,
    audit_record_event_id,
    decode_envelope,
    decode_payload,
    lane_event_decoder,
)
from fraudrt.rtdl.decision_log_audit import (
    DecisionLogAudit,
    DecisionLogAuditConfig,
    anomalies,
    audit_progress,
    chains,
    links,
)
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations
from fraudrt.substrate import s3_client
from tests.support.harness import (
    Ack,
    LocalActor,
    SpyBus,
    create_streams,
    make_scope,
    open_pool,
    put,
    wait_checkpoints,
    wait_for,
)
from tests.support.lane_events import Chain, chain, outcome, with_payload

pytestmark = pytest.mark.integration

DLA = "decision_log_audit"
ORDERS = [("decision", "intent", "outcome"), ("decision", "outcome", "intent"), ("intent", "decision", "outcome"),
          ("intent", "outcome", "decision"), ("outcome", "decision", "intent"), ("outcome", "intent", "decision")]


@pytest.fixture(scope="module")
async def pool(settings: Any) -> Any:
    async with open_pool(settings) as p:
        async with p.acquire() as conn:
            await apply_migrations(conn, "fraudrt.rtdl.decision_log_audit")
        yield p


@pytest.fixture(scope="module")
async def bus(settings: Any) -> Any:
    async with KinesisBus(settings.kinesis) as b:
        yield b


def part(c: Chain, name: str) -> bytes:
    return {"decision": c.decision, "intent": c.intent, "outcome": outcome(c)}[name]


async def wait_read(pool: Any, run: str, acks: Iterable[Ack]) -> None:
    await wait_checkpoints(pool, DLA, run, acks)


async def audit_records(pool: Any, stream: str) -> list[tuple[str, str | None, AuditRecordPayload]]:
    """(event id, parent event id, payload) of every audit record written to the outbox for `stream`."""
    rows = await pool.fetch("SELECT event_id, data FROM rt_outbox WHERE stream = $1 ORDER BY id", stream)
    out = []
    for r in rows:
        env = decode_envelope(bytes(r["data"]))
        assert env.event_id == r["event_id"] and env.event_type == "audit_record"
        out.append((env.event_id, env.parent_event_id, decode_payload(lane_event_decoder.decode(bytes(r["data"])))))
    return out


async def segment_lines(settings: Any, run: str) -> dict[str, list[dict[str, Any]]]:
    """Every segment object of the run: key -> its parsed lines."""
    out: dict[str, list[dict[str, Any]]] = {}
    async with s3_client(settings.s3) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=settings.buckets.platform, Prefix=f"{run}/decision_log_audit/"):
            for obj in page.get("Contents", []):
                body = await (await s3.get_object(Bucket=settings.buckets.platform, Key=obj["Key"]))["Body"].read()
                out[obj["Key"]] = [json.loads(line) for line in body.splitlines()]
    return out


def line_at(segments: dict[str, list[dict[str, Any]]], bucket: str, ref: str) -> dict[str, Any]:
    key, _, line = ref.removeprefix(f"s3://{bucket}/").partition("#L")
    return segments[key][int(line) - 1]


async def test_every_arrival_order_resolves_each_chain_once_with_its_records_logged_and_indexed(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    settings, run = scope.settings, scope.run_id
    rtdl, audit = await create_streams(settings, ["rtdl", "audit"])
    apart = [chain(run, i) for i in range(len(ORDERS))]
    together = [chain(run, 100 + i) for i in range(len(ORDERS))]
    actor = DecisionLogAudit(DecisionLogAuditConfig(grace_seconds=60))
    # The first records are on the bus before DLA starts: with no checkpoint it reads from TRIM_HORIZON.
    acks: list[Ack] = await put(bus, rtdl, [part(c, order[0]) for c, order in zip(apart, ORDERS, strict=True)])
    async with SpyBus(settings.kinesis) as spy, LocalActor(settings, actor, run, pool, spy):
        await wait_read(pool, run, acks)
        assert spy.iterator_requests[0] == (rtdl, acks[0].shard_id, None), "no checkpoint: TRIM_HORIZON"
        # Each record of these chains in a batch of its own: the chain is rebuilt from the index each time.
        for step in range(1, 3):
            acks += await put(bus, rtdl, [part(c, order[step]) for c, order in zip(apart, ORDERS, strict=True)])
            await wait_read(pool, run, acks)
        # These in one batch, each chain in its own order.
        acks += await put(bus, rtdl, [part(c, name) for c, order in zip(together, ORDERS, strict=True)
                                      for name in order])
        await wait_read(pool, run, acks)
        health, details = actor.health(), actor.health_details()
        latency = actor.latency_histograms()["admit_to_audit"].summary()
    everything = apart + together
    async with pool.acquire() as conn:
        views = {v.decision_id: v for v in await chains(conn, run)}
        chain_links = {c.decision_id: await links(conn, run, c.decision_id) for c in everything}
        counters = await audit_progress(conn, run)
        timers = await conn.fetchval("SELECT count(*) FROM rt_timers WHERE component = $1 AND platform_run_id = $2",
                                     DLA, run)
    records = await audit_records(pool, audit)
    segments = await segment_lines(settings, run)

    assert len(records) == len(everything), "one audit record per chain"
    by_decision = {p.decision_id: (eid, parent, p) for eid, parent, p in records}
    bucket = settings.buckets.platform
    for c in everything:
        view = views[c.decision_id]
        assert (view.status, view.reasons, view.late) == ("RESOLVED", [], False)
        eid, parent, p = by_decision[c.decision_id]
        assert eid == p.audit_id == audit_chain_id(run, c.decision_id) and parent == c.decision_event_id
        assert (p.chain_status, p.unresolved_reasons, p.intent_ids, p.outcome_ids, p.outcome_statuses) == \
            ("RESOLVED", [], [c.action_id], [c.outcome_id], ["EXECUTED"])
        assert (p.source_event_id, p.action, p.supersedes_event_id) == (c.source_event_id, c.action, None)
        # The audit record points at the decision's line in the log; every record of the chain has one.
        assert line_at(segments, bucket, p.segment_ref or "")["event_id"] == c.decision_event_id
        assert sorted(link.event_type for link in chain_links[c.decision_id]) == \
            ["action_intent", "action_outcome", "decision_response"]
        for link in chain_links[c.decision_id]:
            line = line_at(segments, bucket, link.segment_ref)
            assert (line["event_id"], line["verdict"], line["sequence_number"]) == \
                (link.event_id, "NEW", link.sequence_number)
    # The log holds each record once; the grace timers were cancelled as the chains resolved.
    logged = [line["event_id"] for lines in segments.values() for line in lines]
    assert len(logged) == len(set(logged)) == 3 * len(everything)
    assert timers == 0
    assert counters["chains_total"] == counters["chains_resolved_total"] == len(everything)
    assert counters["lineage_unresolved_total"] == 0 and details["lineage_unresolved_total"] == 0
    assert health == ("GREEN", [])
    assert latency["count"] == len(everything)
    recon = json.loads((Path(settings.runs_root) / "fraud-platform" / run / DLA / "reconciliation" /
                        "last_reconciliation.json").read_text())
    assert recon["chains"] == {"total": 12, "resolved": 12, "unresolved": 0, "in_flight": 0, "late_resolved": 0}
    assert recon["decisions_by_action"]["APPROVE"] == 12 and recon["outcomes_by_status"]["EXECUTED"] == 12
    assert recon["records"] == {"decision_response": 12, "action_intent": 12, "action_outcome": 12}


async def test_chains_incomplete_after_the_grace_period_are_unresolved_until_they_resolve_late(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    settings, run = scope.settings, scope.run_id
    rtdl, audit = await create_streams(settings, ["rtdl", "audit"])
    no_outcome, orphan, whole = chain(run, 1), chain(run, 2), chain(run, 3, action="DECLINE")
    actor = DecisionLogAudit(DecisionLogAuditConfig(grace_seconds=1.0))
    async with LocalActor(settings, actor, run, pool, bus):
        acks = await put(bus, rtdl, [no_outcome.decision, no_outcome.intent, outcome(orphan),
                                     whole.decision, whole.intent, outcome(whole)])
        await wait_read(pool, run, acks)

        async def unresolved() -> int:
            return actor.lineage_unresolved_total

        await wait_for(unresolved, lambda n: n == 2, timeout=60, what="both incomplete chains past their grace")
        health_open = actor.health()
        recon_open = actor.reconciliation()
        # The missing records come after all: both chains resolve late.
        acks += await put(bus, rtdl, [outcome(no_outcome), orphan.decision, orphan.intent])
        await wait_read(pool, run, acks)
        health_closed, details = actor.health(), actor.health_details()
    async with pool.acquire() as conn:
        views = {v.decision_id: v for v in await chains(conn, run)}
    records = await audit_records(pool, audit)

    assert health_open == ("AMBER", ["LINEAGE_UNRESOLVED: 2 chains incomplete after 1s"])
    assert {u["decision_id"]: u["reasons"] for u in recon_open["unresolved"]} == {
        no_outcome.decision_id: ["MISSING_OUTCOME"], orphan.decision_id: ["MISSING_DECISION", "MISSING_INTENT_LINK"]}
    by_event = {eid: p for eid, _, p in records}
    assert len(records) == 5, "whole: 1; each late chain: UNRESOLVED then RESOLVED"
    for c, reasons in ((no_outcome, ["MISSING_OUTCOME"]), (orphan, ["MISSING_DECISION", "MISSING_INTENT_LINK"])):
        audit_id = audit_chain_id(run, c.decision_id)
        unresolved_id = audit_record_event_id(audit_id, "UNRESOLVED")
        first, last = by_event[unresolved_id], by_event[audit_id]
        assert (first.chain_status, first.unresolved_reasons) == ("UNRESOLVED", reasons)
        assert (last.chain_status, last.unresolved_reasons, last.supersedes_event_id) == ("RESOLVED", [], unresolved_id)
        assert (views[c.decision_id].status, views[c.decision_id].late) == ("RESOLVED", True)
    assert (by_event[audit_chain_id(run, whole.decision_id)].chain_status, views[whole.decision_id].late) == \
        ("RESOLVED", False)
    assert details["lineage_unresolved_total"] == 0 and details["late_resolved_total"] == 2
    assert health_closed == ("GREEN", [])


async def test_changed_copies_and_conflicting_links_are_recorded_and_never_overwrite(
        substrate: Any, pool: Any, bus: KinesisBus, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    settings, run = scope.settings, scope.run_id
    rtdl, audit = await create_streams(settings, ["rtdl", "audit"])
    c = chain(run, 7)
    changed = with_payload(c.decision, score=0.99)
    # A second outcome for the same intent (another outcome id): the auditor must flag it.
    second = with_payload(outcome(c), status="FAILED")
    second = second.replace(c.outcome_id.encode(), b"9" * 32)
    actor = DecisionLogAudit(DecisionLogAuditConfig(grace_seconds=60))
    async with LocalActor(settings, actor, run, pool, bus):
        acks = await put(bus, rtdl, [c.decision, c.intent, outcome(c)])
        await wait_read(pool, run, acks)
        acks += await put(bus, rtdl, [c.decision, changed, c.intent, second])
        await wait_read(pool, run, acks)
        health = actor.health()
        counters = dict(actor.counters)
    async with pool.acquire() as conn:
        found = await anomalies(conn, run)
        held = {link.event_id: link for link in await links(conn, run, c.decision_id)}
        (view,) = await chains(conn, run)
    segments = await segment_lines(settings, run)
    records = await audit_records(pool, audit)

    assert [(a.kind, a.event_id) for a in found] == [("MISMATCH", c.decision_event_id),
                                                    ("OUTCOME_CONFLICT", "9" * 32)]
    mismatch_line = line_at(segments, settings.buckets.platform, found[0].segment_ref or "")
    assert mismatch_line["verdict"] == "MISMATCH" and mismatch_line["record"]["payload"]["score"] == 0.99
    # The held decision is the first copy; the chain keeps its one outcome; one audit record stands.
    original = line_at(segments, settings.buckets.platform, held[c.decision_event_id].segment_ref)
    assert original["verdict"] == "NEW" and original["record"]["payload"]["score"] != 0.99
    assert (view.status, view.outcome_ids, view.outcome_statuses) == ("RESOLVED", [c.outcome_id], ["EXECUTED"])
    assert len(records) == 1
    assert (counters["duplicates_total"], counters["mismatches_total"], counters["conflicts_total"]) == (2, 1, 1)
    assert health == ("AMBER", ["AUDIT_ANOMALIES: 1 changed copies, 1 conflicting links"])
