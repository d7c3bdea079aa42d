"""Outbox retention: an owner's published rows are deleted once they are older than the retention.

A published row is only evidence (what went out, at which sequence number); keeping every one makes
an always-on pack's `rt_outbox` grow without end. The pruner never scans for published rows (no
index covers them; the relay's index holds only pending ones). It walks the outbox ids forward
from a cursor kept in `rt_outbox_retention`, a chunk at a time, up to the first row created after
the horizon or the owner's first still-pending row, and deletes its owner's rows on the way: a row
is deleted only once it and every row of its owner before it went out, so nothing unpublished is
lost and nothing published is skipped for good. Other owners' rows are left to their own pruners.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import anyio

log = logging.getLogger("fraudrt.runtime.outbox")

# A pack's `runtime.outbox_retention_seconds` (0 or null: keep every row): a day of evidence.
DEFAULT_OUTBOX_RETENTION_SECONDS = 24 * 3600

# Where this round stops: just before the first row of the next chunk (any owner's) created after
# the horizon, or the first still-pending row of this owner; else at the chunk's end. Every row of
# this owner up to there is published and past retention.
_BOUND_SQL = """
SELECT coalesce(min(c.id) FILTER (WHERE c.created_at >= now() - make_interval(secs => $3::float8)
                                     OR (c.owner = $4 AND c.published_at IS NULL)) - 1,
                max(c.id))
  FROM (SELECT id, created_at, owner, published_at FROM rt_outbox WHERE id > $1 ORDER BY id LIMIT $2) AS c
"""

_DELETE_SQL = "DELETE FROM rt_outbox WHERE id > $1 AND id <= $2 AND owner = $3"

_SAVE_SQL = """
INSERT INTO rt_outbox_retention (owner, deleted_through) VALUES ($1, $2)
    ON CONFLICT (owner) DO UPDATE SET deleted_through = EXCLUDED.deleted_through, updated_at = now()
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

    async def prune_once(self) -> int | None:
        """One chunk: rows deleted, or None when the walk is at the horizon or the oldest pending row."""
        async with self.pool.acquire() as conn, conn.transaction():
            cursor = await conn.fetchval(
                "SELECT deleted_through FROM rt_outbox_retention WHERE owner = $1 FOR UPDATE", self.owner)
            if cursor is None:
                cursor = (await conn.fetchval("SELECT min(id) FROM rt_outbox") or 1) - 1
            bound = await conn.fetchval(_BOUND_SQL, cursor, self.chunk, self.retention_seconds, self.owner)
            if bound is None or bound <= cursor:
                return None
            status = await conn.execute(_DELETE_SQL, cursor, bound, self.owner)
            await conn.execute(_SAVE_SQL, self.owner, bound)
        deleted = int(status.rpartition(" ")[2])
        self.deleted_total += deleted
        return deleted

    async def prune(self) -> int:
        """Walk as far as the horizon allows now; rows deleted."""
        total = 0
        while (deleted := await self.prune_once()) is not None:
            total += deleted
        return total

    async def run(self, stopping: anyio.Event) -> None:
        # Spread the packs' pruners over the interval rather than all at once.
        await anyio.sleep(random.uniform(0, self.interval_seconds))
        while not stopping.is_set():
            deleted = await self.prune()
            if deleted:
                log.info("outbox retention: deleted %d published row(s) of %s", deleted, self.owner)
            with anyio.move_on_after(self.interval_seconds):
                await stopping.wait()
