"""IG's admission store against the real Postgres: who holds a claim, and whose commit counts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from fraudrt.config import Settings
from fraudrt.control_ingress.ingestion_gate._store import AdmissionStore, AdmitCommit, ClaimRow
from fraudrt.runtime import apply_migrations

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
                            b'{"event_id": "x"}'))
    return out


def _commit(row: ClaimRow, token: str, i: int) -> AdmitCommit:
    return AdmitCommit(row.dedupe_key, token, "s", 0, str(10**20 + i), "2026-01-01T00:00:00.000000Z",
                       f"r{i}-{token[:6]}", f"s3://b/{i}", None)


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
