"""Who may take an admission's claim over, and what the receipt object then says.

Real IGs in this process (their heal loops running) against the session substrate; a claim is
made slow by delaying the IG's PutRecords, so the moments that matter (a heal while a push is
still publishing, a lease that runs out under a live request) happen every time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import asyncpg
import pytest

from fraudrt.config import Settings, project_root
from fraudrt.control_ingress.ingestion_gate import Admissible, evaluate
from fraudrt.control_ingress.ingestion_gate._store import ClaimRow
from fraudrt.runtime.bus import PutEntry, PutResult

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from tests.support.harness import wait_for
from tests.support.ig import (
    RunningIg,
    close_s3_clients,
    get_object,
    new_run_id,
    push,
    running_ig,
    stream_records,
    traffic,
)

pytestmark = pytest.mark.integration

LEASE = 0.3  # seconds; the heal loop then runs every 0.2 s


class SlowBus:
    """The IG's own bus client, each PutRecords held back by `delay` seconds."""

    def __init__(self, bus: Any, delay: float) -> None:
        self.bus = bus
        self.delay = delay

    async def put_records(self, stream: str, entries: Sequence[PutEntry]) -> list[PutResult]:
        await asyncio.sleep(self.delay)
        result: list[PutResult] = await self.bus.put_records(stream, entries)
        return result


def slow_down(ig: RunningIg, delay: float) -> None:
    publisher = ig.service._publisher
    assert publisher is not None
    publisher.bus = SlowBus(publisher.bus, delay)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module", autouse=True)
async def _close_s3_clients() -> AsyncIterator[None]:
    yield
    await close_s3_clients()


async def _rows(settings: Settings, keys: list[str]) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.postgres.dsn)
    try:
        rows = await conn.fetch("SELECT dedupe_key, state, eb_offset, receipt_ref, claimed_by, publish_attempts "
                                "FROM ig_admissions WHERE dedupe_key = ANY($1::text[])", keys)
    finally:
        await conn.close()
    return {r["dedupe_key"]: r for r in rows}


async def _receipts_agree_with_rows(settings: Settings, keys: list[str]) -> dict[str, Any]:
    rows = await _rows(settings, keys)
    assert sorted(rows) == sorted(keys) and {r["state"] for r in rows.values()} == {"ADMITTED"}, rows
    for row in rows.values():
        receipt = await get_object(settings, row["receipt_ref"])
        assert receipt["eb_ref"]["offset"] == row["eb_offset"], "the receipt object disagrees with its row"
    return rows


def _keys(ig: RunningIg, events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        res = evaluate(0, json.dumps(e).encode(), ig.service.gate.policy, ig.run_id)  # type: ignore[union-attr]
        assert isinstance(res, Admissible)
        out.append(res.dedupe_key)
    return out


async def test_a_push_slower_than_the_lease_is_not_taken_over_by_its_own_heal(
        private_streams: Settings, http: aiohttp.ClientSession) -> None:
    """The heal runs every 0.2 s and the lease is 0.3 s; the push's PutRecords takes 1.5 s. Its
    claim is past the lease while it publishes, but a live request of this process holds it."""
    async with running_ig(private_streams, new_run_id(), options={"heal_lease_seconds": LEASE}) as ig:
        slow_down(ig, 1.5)
        events = [traffic(ig.run_id, i) for i in range(20)]
        status, body, _ = await push(http, ig, {"events": events})
        assert status == 200, body
        assert [r["decision"] for r in body["results"]] == ["ADMIT"] * len(events)
        rows = await _receipts_agree_with_rows(ig.settings, _keys(ig, events))
        assert {r["publish_attempts"] for r in rows.values()} == {0}, "nobody took the claim over"
        records = await stream_records(ig.settings, ig.settings.streams.name("traffic_fraud"))
        assert sorted(e["event_id"] for _, e in records) == sorted(e["event_id"] for e in events)


async def test_a_claim_taken_over_past_its_lease_leaves_no_receipt_object_of_the_loser(
        private_streams: Settings, http: aiohttp.ClientSession) -> None:
    """IG A's push outlives the lease (a stuck request); IG B's heal takes the claim over, publishes
    and commits. A finishes later: it must not write its receipt objects over B's, nor commit."""
    run = new_run_id()
    options = {"heal_lease_seconds": LEASE}
    async with running_ig(private_streams, run, options=options) as a, running_ig(private_streams, run,
                                                                                   options=options) as b:
        slow_down(a, 2.0)
        events = [traffic(run, i) for i in range(20)]
        keys = _keys(a, events)
        status, body, _ = await push(http, a, {"events": events})
        assert status == 503 and body["error"] == "PUBLISH_IN_FLIGHT_RETRY", body
        rows = await _receipts_agree_with_rows(a.settings, keys)
        assert {r["claimed_by"] for r in rows.values()} == {b.service.gate.config.instance_id}  # type: ignore[union-attr]
        assert {r["publish_attempts"] for r in rows.values()} == {1}  # the one unavoidable re-publish
        # The producer's retry gets the committed eb_ref; the bus holds each event twice (A's late
        # publish and B's), and the committed one is at the row's offset.
        status, again, _ = await push(http, a, {"events": events})
        assert status == 200 and [r["decision"] for r in again["results"]] == ["DUPLICATE"] * len(events)
        assert [r["eb_ref"]["offset"] for r in again["results"]] == [rows[k]["eb_offset"] for k in keys]
        on_bus = await stream_records(a.settings, a.settings.streams.name("traffic_fraud"))
        by_seq = {seq: e["event_id"] for seq, e in on_bus}
        assert all(by_seq[rows[k]["eb_offset"]] == e["event_id"] for k, e in zip(keys, events, strict=True))
        assert len(on_bus) == 2 * len(events)


async def test_a_retry_during_a_heal_waits_for_it_instead_of_publishing_again(
        private_streams: Settings, http: aiohttp.ClientSession) -> None:
    """A dead instance left a claim; this IG's heal is re-publishing it (slowly) when the producer's
    retry of the same events arrives: the retry waits and answers DUPLICATE, one record per event."""
    async with running_ig(private_streams, new_run_id(), options={"heal_lease_seconds": LEASE}) as ig:
        gate = ig.service.gate
        assert gate is not None
        slow_down(ig, 1.0)
        events = [traffic(ig.run_id, i) for i in range(10)]
        admissible = [evaluate(i, json.dumps(e).encode(), gate.policy, ig.run_id) for i, e in enumerate(events)]
        claims = [ClaimRow(a.dedupe_key, a.platform_run_id, a.rule.event_class, a.env.event_id, a.env.event_type,
                           a.payload_hash, a.rule.route.stream, a.partition_key, a.rule.route.profile_id,
                           uuid.uuid4().hex[:32], a.data) for a in admissible if isinstance(a, Admissible)]
        keys = [c.dedupe_key for c in claims]
        await gate.store.claim(claims, uuid.uuid4().hex, "ig@a-host-gone/1.deadbeef", LEASE)

        async def claimant() -> str:
            return {r["claimed_by"] for r in (await _rows(ig.settings, keys)).values()}.pop()

        await wait_for(claimant, lambda who: who == gate.config.instance_id, timeout=20, interval=0.02,
                       what="this IG's heal to take the dead instance's claim")
        status, body, _ = await push(http, ig, {"events": events})  # the heal is publishing now
        assert status == 200, body
        assert [r["decision"] for r in body["results"]] == ["DUPLICATE"] * len(events)
        rows = await _receipts_agree_with_rows(ig.settings, keys)
        records = await stream_records(ig.settings, ig.settings.streams.name("traffic_fraud"))
        assert sorted(e["event_id"] for _, e in records) == sorted(e["event_id"] for e in events)
        assert [r["eb_ref"]["offset"] for r in body["results"]] == [rows[k]["eb_offset"] for k in keys]
