"""Outbox retention: an owner's published rows are deleted once they are older than the retention.

A published row is only evidence (what went out, at which sequence number); keeping every one makes
an always-on pack's `rt_outbox` grow without end. The pruner never scans for published rows (no
index covers them; the relay's index holds only ready ones). It walks the outbox ids forward from a
cursor kept in `rt_outbox_retention`, a chunk at a time, up to the first row created after the
horizon or the owner's first row not yet published, and deletes its owner's rows on the way.

Two facts make the walk subtle. Outbox ids are assigned at INSERT, not at commit: a row inserted by
a transaction still open when the walk computes its bound is invisible to it and may commit later,
inside the range just walked. And every statement of a READ COMMITTED transaction takes a new
snapshot. So (1) the DELETE itself requires `published_at IS NOT NULL` and the retention horizon:
it can never remove a row that has not gone out, whatever committed in between; and (2) the cursor
moves past a range only after every transaction that was open when its bound was computed has
ended, and then only up to the first of the owner's rows still left in the range: a row that
appeared late is never passed over. Other owners' rows are left to their own pruners.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

log = logging.getLogger("fraudrt.runtime.outbox")

# A pack's `runtime.outbox_retention_seconds` (0 or null: keep every row): a day of evidence.
DEFAULT_OUTBOX_RETENTION_SECONDS = 24 * 3600

# Where this round stops: just before the first row of the next chunk (any owner's) created after
# the horizon, or the first not yet published row of this owner; else at the chunk's end. Also the
# transactions running now, whose rows this snapshot cannot see yet.
_BOUND_SQL = """
SELECT coalesce(min(c.id) FILTER (WHERE c.created_at >= now() - make_interval(secs => $3::float8)
                                     OR (c.owner = $4 AND c.published_at IS NULL)) - 1,
                max(c.id)) AS bound,
       (SELECT array_agg(x::text) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
         WHERE x IS DISTINCT FROM pg_current_xact_id_if_assigned()) AS open_xacts
  FROM (SELECT id, created_at, owner, published_at FROM rt_outbox WHERE id > $1 ORDER BY id LIMIT $2) AS c
"""

# Never trusts the bound alone: only rows that went out and are past retention are deleted.
_DELETE_SQL = """
DELETE FROM rt_outbox WHERE id > $1 AND id <= $2 AND owner = $3
   AND published_at IS NOT NULL AND created_at < now() - make_interval(secs => $4::float8)
"""

_STILL_OPEN_SQL = "SELECT count(*) FROM unnest($1::text[]) AS x WHERE pg_xact_status(x::xid8) = 'in progress'"

# The owner's first row left in the walked range (one that committed late, or not yet published).
_FIRST_LEFT_SQL = "SELECT min(id) FROM rt_outbox WHERE id > $1 AND id <= $2 AND owner = $3"

_SAVE_SQL = """
INSERT INTO rt_outbox_retention (owner, deleted_through) VALUES ($1, $2)
    ON CONFLICT (owner) DO UPDATE SET deleted_through = greatest(rt_outbox_retention.deleted_through,
                                                                 EXCLUDED.deleted_through), updated_at = now()
"""


@dataclass(slots=True)
class OutboxPruner:
    """Deletes `owner`'s published outbox rows created more than `retention_seconds` ago."""

    pool: Any
    owner: str
    retention_seconds: float
    chunk: int = 10_000
    interval_seconds: float = 60.0
    deleted_total: int = 0
    # How long a round waits for the transactions open at its bound before it leaves the cursor.
    open_xact_wait_seconds: float = 10.0
    # Test hook: awaited between computing the bound and the DELETE (the race in the docstring).
    _after_bound: Callable[[], Awaitable[None]] | None = None

    async def prune_once(self) -> int | None:
        """One chunk: rows deleted, or None when the walk is at the horizon or the oldest pending row."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                cursor = await conn.fetchval(
                    "SELECT deleted_through FROM rt_outbox_retention WHERE owner = $1 FOR UPDATE", self.owner)
                if cursor is None:
                    # From the start of the id space, not from the lowest visible id: a row with a
                    # lower id may belong to a transaction that has not committed yet.
                    cursor = 0
                row = await conn.fetchrow(_BOUND_SQL, cursor, self.chunk, self.retention_seconds, self.owner)
                bound, open_xacts = row["bound"], row["open_xacts"] or []
                if bound is None or bound <= cursor:
                    return None
                if self._after_bound is not None:
                    await self._after_bound()
                status = await conn.execute(_DELETE_SQL, cursor, bound, self.owner, self.retention_seconds)
            deleted = int(status.rpartition(" ")[2])
            self.deleted_total += deleted
            # Rows of transactions open at the bound are invisible to it: wait until those end,
            # then stop the cursor before the first of the owner's rows left in the range.
            if not await self._wait_ended(conn, open_xacts):
                return deleted
            async with conn.transaction():
                left = await conn.fetchval(_FIRST_LEFT_SQL, cursor, bound, self.owner)
                through = bound if left is None else left - 1
                if through > cursor:
                    await conn.execute(_SAVE_SQL, self.owner, through)
        # A row left in the range (pending, or committed late and not yet published) stops the walk.
        return deleted if left is None else None

    async def _wait_ended(self, conn: Any, xacts: list[str]) -> bool:
        """True once none of `xacts` is in progress; False if one is still open at the deadline."""
        if not xacts:
            return True
        with anyio.move_on_after(self.open_xact_wait_seconds):
            # Postgres signals no transaction's end to another session: poll, briefly, off the hot path.
            while await conn.fetchval(_STILL_OPEN_SQL, xacts):  # noqa: ASYNC110
                await anyio.sleep(0.05)
            return True
        return False

    async def prune(self) -> int:
        """Walk as far as the horizon allows now; rows deleted."""
        before = self.deleted_total
        while await self.prune_once() is not None:
            pass
        return self.deleted_total - before

    async def run(self, stopping: anyio.Event) -> None:
        # Spread the packs' pruners over the interval rather than all at once.
        await anyio.sleep(random.uniform(0, self.interval_seconds))
        while not stopping.is_set():
            deleted = await self.prune()
            if deleted:
                log.info("outbox retention: deleted %d published row(s) of %s", deleted, self.owner)
            with anyio.move_on_after(self.interval_seconds):
                await stopping.wait()
