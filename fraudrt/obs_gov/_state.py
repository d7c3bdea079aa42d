"""The run reporter's counters in Postgres: one upsert per batch, one read per report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

from fraudrt.runtime import pack_columns, split_sql

from ._aggregate import Folded

_ADD: Final = (f"INSERT INTO obs_counts (platform_run_id, key, value) "
               f"SELECT $1, k, v FROM unnest({', '.join(split_sql(2, first=2, casts=['text', 'bigint']))}) AS t(k, v) "
               "ON CONFLICT (platform_run_id, key) DO UPDATE SET value = obs_counts.value + EXCLUDED.value")
_UNSCORED_COLUMNS: Final = ", ".join(split_sql(3, first=2, casts=["text", "bigint", "text"]))
_UNSCORED: Final = (f"INSERT INTO obs_unscored (platform_run_id, decision_id, flow_id, action) "
                    f"SELECT $1, d, f, a FROM unnest({_UNSCORED_COLUMNS}) AS t(d, f, a) ON CONFLICT DO NOTHING")


async def add_counts(conn: Any, platform_run_id: str, deltas: Counter[str]) -> None:
    items = [(k, v) for k, v in deltas.items() if v]
    if items:
        await conn.execute(_ADD, platform_run_id, *pack_columns([[k for k, _ in items], [str(v) for _, v in items]]))


async def save(conn: Any, platform_run_id: str, folded: Folded) -> None:
    await add_counts(conn, platform_run_id, folded.deltas)
    if folded.unscored:
        cols = [[d for d, _, _ in folded.unscored], [str(f) for _, f, _ in folded.unscored],
                [a for _, _, a in folded.unscored]]
        await conn.execute(_UNSCORED, platform_run_id, *pack_columns(cols))


async def load_counts(conn: Any, platform_run_id: str) -> tuple[dict[str, int], int]:
    rows = await conn.fetch("SELECT key, value FROM obs_counts WHERE platform_run_id = $1", platform_run_id)
    unscored = await conn.fetchval("SELECT count(*) FROM obs_unscored WHERE platform_run_id = $1", platform_run_id)
    return {r["key"]: int(r["value"]) for r in rows}, int(unscored)


async def score_pending(pool: Any, platform_run_id: str, label: Callable[[int], str | None],
                        limit: int = 10_000) -> int:
    """Score decisions kept while the truth was unreadable; a flow the truth does not know stays."""
    async with pool.acquire() as conn, conn.transaction():
        rows: Sequence[Any] = await conn.fetch(
            "SELECT decision_id, flow_id, action FROM obs_unscored WHERE platform_run_id = $1 LIMIT $2 FOR UPDATE",
            platform_run_id, limit)
        deltas: Counter[str] = Counter()
        done = []
        for r in rows:
            truth = label(int(r["flow_id"]))
            if truth is not None:
                deltas[f"q.{truth}.{r['action']}"] += 1
                done.append(r["decision_id"])
        if done:
            await add_counts(conn, platform_run_id, deltas)
            await conn.execute("DELETE FROM obs_unscored WHERE platform_run_id = $1 AND decision_id = ANY($2::text[])",
                               platform_run_id, done)
    return len(done)
