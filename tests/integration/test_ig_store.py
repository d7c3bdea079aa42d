"""IG's admission store against the real Postgres: who holds a claim, and whose commit counts."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from fraudrt.contracts import ig_receipt_id
from fraudrt.control_ingress.ingestion_gate._errors import DependencyDown
from fraudrt.control_ingress.ingestion_gate._store import (
    AdmissionStore,
    AdmitCommit,
    ClaimRow,
    InstanceLock,
    SettleIndex,
)
from fraudrt.runtime._migrations import _sql_files
from fraudrt.runtime.packs import apply_migrations
from tests.support.harness import scratch_database, wait_for

RUN = "platform_20260101T000000Z"


@pytest.fixture(scope="module")
async def ig_dsn(settings: Settings) -> AsyncIterator[str]:
    # Its own database: the heal walks every claim of the table, and leftovers of these tests (rows
    # of claimants that hold no instance lock) would be taken by the heal of any IG in the session.
    async with scratch_database(settings, "ig_store") as dsn:
        yield dsn


@pytest.fixture
async def store(ig_dsn: str) -> AsyncIterator[AdmissionStore]:
    pool = await asyncpg.create_pool(ig_dsn, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn, "fraudrt.runtime", "fraudrt.control_ingress.ingestion_gate")
            await conn.execute("TRUNCATE ig_admissions, ig_claims")  # each test sees only its own claims
        yield AdmissionStore(pool)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def live_instance(store: AdmissionStore, base: str) -> AsyncIterator[str]:
    """An instance id whose process counts as alive (it holds its instance lock) for the block."""
    lock = InstanceLock(store.pool)
    try:
        yield await lock.acquire(base)
    finally:
        await lock.release()


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


async def _no_evidence(decided: set[str]) -> SettleIndex:
    return SettleIndex()


async def _settle(store: AdmissionStore, admits: list[AdmitCommit]) -> set[str]:
    return await store.settle(admits, _no_evidence)


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
    # Another instance takes three of them over (a compare-and-swap on the token it saw).
    taken = await store.take_over({r.dedupe_key: "old" for r in rows[:3]}, "new", "other-instance")
    assert taken == {r.dedupe_key for r in rows[:3]}
    # A take-over of a token that is no longer there takes nothing.
    assert await store.take_over({rows[0].dedupe_key: "old"}, "third", "third-instance") == set()

    # The first claimant's settle commits only the rows it still holds...
    committed = await _settle(store, [_commit(r, "old", i) for i, r in enumerate(rows)])
    assert committed == {r.dedupe_key for r in rows[3:]}
    # ...and the taker commits the rest; nothing is committed twice.
    committed = await _settle(store, [_commit(r, "new", i) for i, r in enumerate(rows[:3])])
    assert committed == {r.dedupe_key for r in rows[:3]}
    again = await _settle(store, [_commit(r, "new", i) for i, r in enumerate(rows[:3])])
    assert again == set()

    found = await store.select([r.dedupe_key for r in rows], 60)
    assert {k: (v.state, v.claim_token, v.eb_offset) for k, v in found.items()} == {
        r.dedupe_key: ("ADMITTED", "new" if i < 3 else "old", str(10**20 + i)) for i, r in enumerate(rows)}


async def test_a_claim_is_released_by_the_settle_of_all_its_rows(store: AdmissionStore) -> None:
    async with live_instance(store, "me") as me:
        rows = _rows(5)
        keys = [r.dedupe_key for r in rows]
        await store.claim(rows, "whole", me, 60)
        assert await _claims(store, keys) == {"whole": set(keys)}
        await _settle(store, [_commit(r, "whole", i) for i, r in enumerate(rows)])
        assert await _claims(store, keys) == {}

        # A settle of part of a claim leaves it recorded (the rest may still be pending); once its
        # lease is over, the heal consumes it and finds nothing else to take.
        rows = _rows(4)
        keys = [r.dedupe_key for r in rows]
        await store.claim(rows, "part", me, 60)
        await _settle(store, [_commit(r, "part", i) for i, r in enumerate(rows[:3])])
        assert await _claims(store, keys) == {"part": set(keys)}
        consumed, healed = await store.claim_orphans("heal", "healer", 0, 1000)
        assert consumed >= 1 and {h.dedupe_key for h in healed} & set(keys) == {keys[3]}
        assert await _claims(store, keys) == {"heal": {keys[3]}}


async def test_a_dead_instances_claims_are_healed_at_once_a_live_ones_after_the_lease(
        store: AdmissionStore) -> None:
    dead_rows, live_rows = _rows(3), _rows(3)
    async with live_instance(store, "ig@host/1") as live, live_instance(store, "ig@host/2") as healer:
        async with live_instance(store, "ig@host/3") as soon_dead:
            await store.claim(dead_rows, "t-dead", soon_dead, 60)
        await store.claim(live_rows, "t-live", live, 60)  # its process holds its lock: alive

        consumed, healed = await store.claim_orphans("heal", healer, 3600, 1000)
        assert {h.dedupe_key for h in healed} == {r.dedupe_key for r in dead_rows}
        assert consumed == 1 and all(h.claim_token == "heal" for h in healed)
        # The live instance's claim waits for its lease (taken at lease 0, i.e. past it).
        _, healed = await store.claim_orphans("heal-2", healer, 3600, 1000)
        assert healed == []
        _, healed = await store.claim_orphans("heal-3", healer, 0, 1000, live_tokens=["heal"])
        assert {h.dedupe_key for h in healed} == {r.dedupe_key for r in live_rows}


async def test_the_heal_never_takes_a_claim_a_live_request_of_its_process_holds(store: AdmissionStore) -> None:
    rows = _rows(4)
    keys = [r.dedupe_key for r in rows]
    async with live_instance(store, "ig@host/me") as me:
        await store.claim(rows[:2], "request-a", me, 60)
        await store.claim(rows[2:], "request-b", me, 60)
        # Past the lease (0), but request-a is still running in this process.
        _, healed = await store.claim_orphans("heal", me, 0, 1000, live_tokens=["heal", "request-a"])
        assert {h.dedupe_key for h in healed} == set(keys[2:])
        assert (await store.select(keys[:2], 60))[keys[0]].claim_token == "request-a"
        assert await _claims(store, keys) == {"request-a": set(keys[:2]), "heal": set(keys[2:])}


async def test_the_heal_takes_stale_claims_and_leaves_rows_another_claimant_took_since(
        store: AdmissionStore) -> None:
    rows = _rows(4)
    keys = [r.dedupe_key for r in rows]
    async with live_instance(store, "ig@host/a") as a, live_instance(store, "ig@host/b") as b:
        await store.claim(rows, "first", a, 60)
        # A retry of the push takes two rows over under its own claim, before the heal runs.
        assert await store.take_over({k: "first" for k in keys[:2]}, "retry", b) == set(keys[:2])
        assert await _claims(store, keys) == {"first": set(keys), "retry": set(keys[:2])}

        # Both claimants alive: nothing is past a one-hour lease.
        _, healed = await store.claim_orphans("heal", "healer", 3600, 1000)
        assert healed == []
        # Past the lease: each pending row is taken once, whichever claim lists it.
        consumed, healed = await store.claim_orphans("heal", "healer", 0, 1000)
        assert consumed == 2
        assert sorted(h.dedupe_key for h in healed) == sorted(keys)
        assert all(h.claim_token == "heal" and h.data == b'{"event_id": "x"}' for h in healed)
        assert await _claims(store, keys) == {"heal": set(keys)}, "the old claims are consumed, the new one recorded"

        # The "heal" claim's claimant (no lock: dead) is healed in turn, but not the row another live
        # instance took over from it since: that row's own claim is young and its claimant alive.
        await store.take_over({keys[0]: "heal"}, "fresh", b)
        _, healed = await store.claim_orphans("late", a, 30, 1000)
        assert {h.dedupe_key for h in healed} == set(keys[1:])
        assert (await store.select(keys, 60))[keys[0]].claim_token == "fresh"


async def test_an_instance_id_is_unique_per_process_and_its_lock_goes_with_it(store: AdmissionStore) -> None:
    first, second = InstanceLock(store.pool), InstanceLock(store.pool)
    try:
        a, b = await first.acquire("ig@host:8081"), await second.acquire("ig@host:8081")
        assert a != b and a.startswith("ig@host:8081.") and first.held and second.held
        rows = _rows(2)
        await store.claim(rows, "t-a", a, 60)
        _, healed = await store.claim_orphans("heal", b, 3600, 1000)
        assert healed == [], "a live instance's fresh claim is not taken, whatever its address"
        # The process dies: its session (and lock) goes; its claims are orphans at once (as soon as
        # the server has noticed the closed connection).
        first._conn.terminate()
        healed = await wait_for(lambda: store.claim_orphans("heal", b, 3600, 1000), lambda r: bool(r[1]),
                                timeout=20, what="the dead instance's claim to be orphaned")
        assert {h.dedupe_key for h in healed[1]} == {r.dedupe_key for r in rows}
        # A broken lock session is noticed and re-taken under the same id.
        await first.ensure()
        assert first.held and first.instance_id == a
    finally:
        await first.release()
        await second.release()


async def test_a_settle_writes_evidence_only_for_what_it_committed_while_the_rows_are_locked(
        store: AdmissionStore) -> None:
    rows = _rows(4)
    keys = [r.dedupe_key for r in rows]
    await store.claim(rows, "mine", "me", 60)
    await store.take_over({keys[0]: "mine"}, "theirs", "other")
    seen: list[set[str]] = []

    async def evidence(decided: set[str]) -> SettleIndex:
        seen.append(set(decided))
        # While the evidence is written, another claimant cannot take the committed rows over:
        # its compare-and-swap waits for this transaction, then finds them ADMITTED.
        async with store.pool.acquire() as other:
            with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
                await other.fetch("SELECT 1 FROM ig_admissions WHERE dedupe_key = $1 FOR UPDATE NOWAIT", keys[1])
        return SettleIndex()

    committed = await store.settle([_commit(r, "mine", i) for i, r in enumerate(rows)], evidence)
    assert committed == set(keys[1:]) and seen == [set(keys[1:])]


async def test_a_failed_evidence_write_leaves_the_rows_pending_and_the_claim_recorded(store: AdmissionStore) -> None:
    rows = _rows(2)
    keys = [r.dedupe_key for r in rows]
    await store.claim(rows, "mine", "me", 60)

    async def s3_down(decided: set[str]) -> SettleIndex:
        raise DependencyDown("object_store", "cut")

    with pytest.raises(DependencyDown) as down:
        await store.settle([_commit(r, "mine", i) for i, r in enumerate(rows)], s3_down)
    assert down.value.dependency == "object_store"
    assert {v.state for v in (await store.select(keys, 60)).values()} == {"PUBLISH_PENDING"}
    assert await _claims(store, keys) == {"mine": set(keys)}


async def test_a_heal_drops_a_pending_row_only_while_its_claim_holds_it(store: AdmissionStore) -> None:
    rows = _rows(2)
    keys = [r.dedupe_key for r in rows]
    await store.claim(rows, "heal", "me", 60)
    await store.take_over({keys[1]: "heal"}, "other", "someone")
    decided = await store.settle([], _no_evidence, drops=[(keys[0], "heal"), (keys[1], "heal")])
    assert decided == {keys[0]}
    assert set(await store.select(keys, 60)) == {keys[1]}


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
