"""Outbox retention against the real Postgres: published rows past retention go, nothing else does."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from fraudrt.runtime._outbox_retention import OutboxPruner
from fraudrt.runtime.packs import apply_migrations
from tests.support.harness import scratch_database


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[Any]:
    """A pool on a scratch database: the pruner walks the whole id space, which other tests share."""
    async with scratch_database(settings, "outbox_retention") as dsn:
        p = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            async with p.acquire() as conn:
                await apply_migrations(conn, "fraudrt.runtime")
            yield p
        finally:
            await p.close()


async def _add(pool: Any, owner: str, *, age_hours: float, published: bool) -> int:
    ts = f"now() - interval '{age_hours} hours'"
    return int(await pool.fetchval(
        f"INSERT INTO rt_outbox (owner, stream, partition_key, event_id, data, created_at, published_at) "
        f"VALUES ($1, 's', 'pk', $2, 'x', {ts}, {ts if published else 'NULL'}) RETURNING id",
        owner, uuid.uuid4().hex))


async def _ids(pool: Any, owner: str) -> set[int]:
    return {r["id"] for r in await pool.fetch("SELECT id FROM rt_outbox WHERE owner = $1", owner)}


async def test_published_rows_past_retention_are_deleted_up_to_the_first_pending_one(pool: Any) -> None:
    old_1 = await _add(pool, "A", age_hours=50, published=True)
    other = await _add(pool, "B", age_hours=49, published=True)
    old_2 = await _add(pool, "A", age_hours=48, published=True)
    pending = await _add(pool, "A", age_hours=47, published=False)
    after_pending = await _add(pool, "A", age_hours=46, published=True)
    recent = await _add(pool, "A", age_hours=0, published=True)
    pruner = OutboxPruner(pool, "A", retention_seconds=24 * 3600, chunk=2)  # several chunks per walk

    assert await pruner.prune() == 2
    # Its own old published rows before the pending one; the pending row and everything after it
    # stay (so none is passed over), as do other owners' rows.
    assert await _ids(pool, "A") == {pending, after_pending, recent}
    assert await _ids(pool, "B") == {other}
    assert old_1 not in await _ids(pool, "A") and old_2 not in await _ids(pool, "A")
    assert await pruner.prune() == 0, "nothing more until the pending row goes out"

    await pool.execute("UPDATE rt_outbox SET published_at = now() WHERE id = $1", pending)
    # A restarted pack resumes from the stored cursor.
    resumed = OutboxPruner(pool, "A", retention_seconds=24 * 3600)
    assert await resumed.prune() == 2
    assert await _ids(pool, "A") == {recent}, "a row younger than the retention is kept"
    assert await _ids(pool, "B") == {other}
    assert await OutboxPruner(pool, "B", retention_seconds=24 * 3600).prune() == 1
    assert await _ids(pool, "B") == set()


async def test_an_empty_or_all_recent_outbox_is_left_alone(pool: Any) -> None:
    assert await OutboxPruner(pool, "A", retention_seconds=3600).prune() == 0
    kept = {await _add(pool, "A", age_hours=0, published=True) for _ in range(3)}
    assert await OutboxPruner(pool, "A", retention_seconds=3600).prune() == 0
    assert await _ids(pool, "A") == kept


async def _insert_open(conn: Any, owner: str) -> int:
    """An unpublished row inserted by a transaction the caller keeps open (its id is taken now)."""
    return int(await conn.fetchval(
        "INSERT INTO rt_outbox (owner, stream, partition_key, event_id, data) VALUES ($1, 's', 'pk', $2, 'x') "
        "RETURNING id", owner, uuid.uuid4().hex))


async def test_a_row_committed_between_the_bound_and_the_delete_is_neither_deleted_nor_passed(pool: Any) -> None:
    """Issue 10.2: outbox ids are assigned at insert, not commit, and each statement takes a new snapshot."""
    first = await _add(pool, "A", age_hours=0.01, published=True)
    writer = await pool.acquire()
    tx = writer.transaction()
    await tx.start()
    try:
        late = await _insert_open(writer, "A")  # invisible to the pruner's bound
        after = [await _add(pool, "A", age_hours=0.01, published=True) for _ in range(3)]

        async def commit_the_writer() -> None:
            await tx.commit()  # ... and visible to the DELETE that follows

        pruner = OutboxPruner(pool, "A", retention_seconds=0.0)
        pruner._after_bound = commit_the_writer
        await pruner.prune()
    finally:
        await pool.release(writer)
    assert await _ids(pool, "A") == {late}, "the late row is kept unpublished; every published row went"
    assert first < late < min(after)
    cursor = await pool.fetchval("SELECT deleted_through FROM rt_outbox_retention WHERE owner = 'A'")
    assert cursor == late - 1, "the cursor stops before the late row, so it is pruned once published"
    await pool.execute("UPDATE rt_outbox SET published_at = now() WHERE id = $1", late)
    assert await OutboxPruner(pool, "A", retention_seconds=0.0).prune() == 1
    assert await _ids(pool, "A") == set()


async def test_the_cursor_waits_for_a_transaction_still_open_at_its_bound(pool: Any) -> None:
    writer = await pool.acquire()
    tx = writer.transaction()
    await tx.start()
    try:
        late = await _insert_open(writer, "A")
        published = [await _add(pool, "A", age_hours=0.01, published=True) for _ in range(3)]
        pruner = OutboxPruner(pool, "A", retention_seconds=0.0, open_xact_wait_seconds=0.3)
        await pruner.prune()
        assert await _ids(pool, "A") == set(), "published rows deleted; the open row is not visible yet"
        before = await pool.fetchval("SELECT deleted_through FROM rt_outbox_retention WHERE owner = 'A'")
        assert before is None or before < late, "the cursor did not pass a row that may still commit"
        await tx.commit()
    finally:
        await pool.release(writer)
    assert await _ids(pool, "A") == {late}
    await OutboxPruner(pool, "A", retention_seconds=0.0).prune()
    assert await _ids(pool, "A") == {late}, "never deleted unpublished"
    cursor = await pool.fetchval("SELECT coalesce(max(deleted_through), 0) FROM rt_outbox_retention WHERE owner = 'A'")
    assert cursor < late, "the walk stops before the late row until it is published"
    assert max(published) > late
