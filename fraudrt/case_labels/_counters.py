"""Per-run counters kept in Postgres with each batch, so metrics survive restarts and rollbacks.

The reference kept CaseTrigger's counters in process memory (reset on restart, replays counted
again) while CM and LS recomputed theirs by scanning whole tables (critique #14, #21). Here each
component adds its batch's counts in the batch's own transaction (one statement) and mirrors them
in memory only after the commit.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from fraudrt.runtime import pack_columns, split_sql

_COLS: Final = split_sql(2, first=3, casts=["text", "bigint"])
_ADD_SQL: Final = f"""
INSERT INTO cl_run_counters (component, platform_run_id, counter, value)
SELECT $1, $2, t.counter, t.value FROM unnest({_COLS[0]}, {_COLS[1]}) AS t(counter, value)
    ON CONFLICT (component, platform_run_id, counter) DO UPDATE SET value = cl_run_counters.value + EXCLUDED.value
"""
_LOAD_SQL: Final = "SELECT counter, value FROM cl_run_counters WHERE component = $1 AND platform_run_id = $2"
_DEAD_SQL: Final = "SELECT count(*) FROM rt_dead_letters WHERE actor = $1 AND platform_run_id = $2"


class RunCounters:
    """`values`: what is committed; `add` in a batch transaction, `commit` once it is durable."""

    def __init__(self, component: str, platform_run_id: str) -> None:
        self.component = component
        self.platform_run_id = platform_run_id
        self.values: Counter[str] = Counter()

    async def load(self, conn: Any) -> None:
        rows = await conn.fetch(_LOAD_SQL, self.component, self.platform_run_id)
        self.values = Counter({r["counter"]: int(r["value"]) for r in rows})
        # Dead letters are the runtime's rows; counted once here, then per batch by the component.
        self.values["dead_letters"] = int(await conn.fetchval(_DEAD_SQL, self.component, self.platform_run_id))

    async def add(self, conn: Any, deltas: Counter[str]) -> None:
        items = [(k, v) for k, v in deltas.items() if v and k != "dead_letters"]
        if items:
            await conn.execute(_ADD_SQL, self.component, self.platform_run_id,
                               *pack_columns([[k for k, _ in items], [str(v) for _, v in items]]))

    def commit(self, deltas: Counter[str]) -> None:
        self.values.update(deltas)

    def __getitem__(self, name: str) -> int:
        return self.values[name]
