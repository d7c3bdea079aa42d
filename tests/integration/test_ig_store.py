"""IG's admission store against the real Postgres: who holds a claim, and whose commit counts."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from fraudrt.contracts import ig_receipt_id
from fraudrt.control_ingress.ingestion_gate._store import AdmissionStore, AdmitCommit, ClaimRow
from fraudrt.runtime import apply_migrations
from fraudrt.runtime._migrations import _sql_files
from tests.support.harness import scratch_database

RUN = "platform_20260101T000000Z"


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[AdmissionStore]:
    pool = await asyncpg.create_pool(settings.postgres.dsn, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.runtime", "fraudrt.control_ingress.ingestion_gate")
        yield AdmissionStore(pool)
    finally:
        await pool.close()


def _rows(n: int) -> list[ClaimRow]:
    out = []
    for _ in range(n):
        eid = uuid.uuid4().hex
        # An event id may hold the packing's default delimiters: the statement must still be exact.
        eid = eid[:8] + "\x1f\x1e" + eid[8:]
        out.append(ClaimRow(f"{RUN}:traffic:{eid}", RUN, "traffic", eid, "t", "h" + eid[:8], "s", "pk", "p",
                            ig_receipt_id("ADMIT", eid), b'{"event_id": "x"}'))
    return out


def _commit(row: ClaimRow, token: str, i: int) -> AdmitCommit:
    return AdmitCommit(row.dedupe_key, token, "s", 0, str(10**20 + i), "2026-01-01T00:00:00.000000Z",
                       row.receipt_id, f"s3://b/{i}", None)


async def _claims(store: AdmissionStore, keys: list[str]) -> dict[str, set[str]]:
    """The recorded claims that list any of `keys`: token -> the listed keys among them."""
    async with store.pool.acquire() as conn:
        rows = await conn.fetch("SELECT claim_token, dedupe_keys FROM ig_claims WHERE dedupe_keys && $1::text[]",
                                keys)
    return {r["claim_token"]: set(r["dedupe_keys"]) & set(keys) for r in rows}


async def test_a_claim_reports_what_it_inserted_and_what_already_existed(store: AdmissionStore) -> None:
    first = _rows(4)
    claimed, existing = await store.claim(first, "t1", "me", 60)
    assert claimed == {r.dedupe_key for r in first} and existing == {}

    second = first[:2] + _rows(3)
    claimed, existing = await store.claim(second, "t2", "me", 60)
    assert claimed == {r.dedupe_key for r in second[2:]}
    assert set(existing) == {r.dedupe_key for r in first[:2]}
    assert all(row.claim_token == "t1" and row.state == "PUBLISH_PENDING" for row in existing.values())


async def test_only_the_current_claimant_commits(store: AdmissionStore) -> None:
    rows = _rows(6)
    claimed, _ = await store.claim(rows, "old", "dead-instance", 60)
    assert len(claimed) == 6
    # Another instance takes three of them over once their lease is up (lease 0: at once).
    taken = await store.take_over([r.dedupe_key for r in rows[:3]], "new", "other-instance", 0)
    assert taken == {r.dedupe_key for r in rows[:3]}

    # The first claimant's settle commits only the rows it still holds...
    committed = await store.settle([_commit(r, "old", i) for i, r in enumerate(rows)], [], [], [])
    assert committed == {r.dedupe_key for r in rows[3:]}
    # ...and the taker commits the rest; nothing is committed twice.
    committed = await store.settle([_commit(r, "new", i) for i, r in enumerate(rows[:3])], [], [], [])
    assert committed == {r.dedupe_key for r in rows[:3]}
    again = await store.settle([_commit(r, "new", i) for i, r in enumerate(rows[:3])], [], [], [])
    assert again == set()

    found = await store.select([r.dedupe_key for r in rows], 60)
    assert {k: (v.state, v.claim_token, v.eb_offset) for k, v in found.items()} == {
        r.dedupe_key: ("ADMITTED", "new" if i < 3 else "old", str(10**20 + i)) for i, r in enumerate(rows)}


async def test_a_claim_is_released_by_the_settle_of_all_its_rows(store: AdmissionStore) -> None:
    rows = _rows(5)
    keys = [r.dedupe_key for r in rows]
    await store.claim(rows, "whole", "me", 60)
    assert await _claims(store, keys) == {"whole": set(keys)}
    await store.settle([_commit(r, "whole", i) for i, r in enumerate(rows)], [], [], [])
    assert await _claims(store, keys) == {}

    # A settle of part of a claim leaves it recorded (the rest may still be pending); once its
    # lease is over, the heal consumes it and finds nothing left to take.
    rows = _rows(4)
    keys = [r.dedupe_key for r in rows]
    await store.claim(rows, "part", "me", 60)
    await store.settle([_commit(r, "part", i) for i, r in enumerate(rows[:3])], [], [], [])
    assert await _claims(store, keys) == {"part": set(keys)}
    consumed, healed = await store.claim_orphans("heal", "healer", 0, 1000)
    assert consumed >= 1 and {h.dedupe_key for h in healed} & set(keys) == {keys[3]}  # the database is shared
    assert await _claims(store, keys) == {"heal": {keys[3]}}


async def test_the_heal_takes_stale_claims_and_leaves_rows_another_claimant_took_since(
        store: AdmissionStore) -> None:
    rows = _rows(4)
    keys = [r.dedupe_key for r in rows]
    await store.claim(rows, "dead", "dead-instance", 60)
    # A retry of the push takes two rows over under its own claim, before the heal runs.
    assert await store.take_over(keys[:2], "retry", "live-instance", 0) == set(keys[:2])
    assert await _claims(store, keys) == {"dead": set(keys), "retry": set(keys[:2])}

    # Lease 0: both claims are stale. Each pending row is taken once, whichever claim lists it.
    _, healed = await store.claim_orphans("heal", "healer", 3600, 1000)
    assert not {h.dedupe_key for h in healed} & set(keys), "nothing is past a one-hour lease"
    consumed, healed = await store.claim_orphans("heal", "healer", 0, 1000)  # (the database is shared)
    assert consumed >= 2
    ours = [h for h in healed if h.dedupe_key in set(keys)]
    assert sorted(h.dedupe_key for h in ours) == sorted(keys)
    assert all(h.claim_token == "heal" and h.data == b'{"event_id": "x"}' for h in ours)
    assert await _claims(store, keys) == {"heal": set(keys)}, "the old claims are consumed, the new one recorded"

    # The "heal" claim is taken in turn (as its dead predecessor's, at startup), but not the row
    # another instance took over from it since: that row's own claim is younger than the lease.
    await store.take_over(keys[:1], "fresh", "live-instance", 0)
    _, healed = await store.claim_orphans("late", "healer", 30, 1000, predecessor="healer")
    assert {h.dedupe_key for h in healed} & set(keys) == set(keys[1:])
    assert (await store.select(keys, 60))[keys[0]].claim_token == "fresh"


async def test_a_startup_heal_takes_the_predecessors_claims_at_once(store: AdmissionStore) -> None:
    rows = _rows(3)
    await store.claim(rows, "before-restart", "127.0.0.1:9999", 60)
    consumed, healed = await store.claim_orphans("after", "127.0.0.1:9999", 60, 5, predecessor="127.0.0.1:9999")
    assert consumed >= 1
    assert {h.dedupe_key for h in healed} >= {r.dedupe_key for r in rows}
    assert all(h.claim_token == "after" for h in healed)


async def test_migration_003_records_the_claims_of_rows_pending_before_it(settings: Settings) -> None:
    """An IG upgraded with admissions still PUBLISH_PENDING: the heal must still find them."""
    files = dict(_sql_files("fraudrt.control_ingress.ingestion_gate"))
    async with scratch_database(settings, "ig_upgrade") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            for name in ("001_ingestion_gate.sql", "002_admit_receipts_in_admissions.sql"):
                await conn.execute(files[name])
            for key, state, token in [("k1", "PUBLISH_PENDING", "A"), ("k2", "PUBLISH_PENDING", "A"),
                                      ("k3", "PUBLISH_PENDING", "B"), ("k4", "ADMITTED", "A")]:
                await conn.execute(
                    "INSERT INTO ig_admissions (dedupe_key, platform_run_id, event_class, event_id, event_type, "
                    "payload_hash, state, stream, partition_key, profile_id, data, claim_token, claimed_by) "
                    "VALUES ($1, $2, 'traffic', $1, 't', 'h', $3, 's', 'pk', 'p', 'x', $4, 'old-instance')",
                    key, RUN, state, token)
            await conn.execute(files["003_claims_ledger.sql"])
            claims = {r["claim_token"]: (sorted(r["dedupe_keys"]), r["keys_total"], r["claimed_by"])
                      for r in await conn.fetch("SELECT * FROM ig_claims")}
            assert claims == {"A": (["k1", "k2"], 2, "old-instance"), "B": (["k3"], 1, "old-instance")}
            indexes = {r["indexname"] for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'ig_admissions'")}
            assert "ig_admissions_pending" not in indexes
        finally:
            await conn.close()
