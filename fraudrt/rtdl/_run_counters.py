"""Per-run counters kept in Postgres beside a component's state, so a restart resumes them exactly.

A component adds its batch's deltas in the batch transaction and loads the totals once at start: the
health files' totals (the closeout reads `intake_total == outcome_total`) never depend on how often
the process restarted, and nothing is recounted by scanning the run. The table is the component's
own (`<table>(platform_run_id, name, value)`, primary key on the first two). `counters_insert`
gives the statement as SQL text so a component can fold it (as a CTE) into its batch's write and
save a round trip; `add_counters` runs it alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from fraudrt.runtime import pack_columns, split_sql

_TABLE_RE: Final = re.compile(r"^[a-z][a-z0-9_]*\Z")
_COLS: Final = split_sql(2, first=2)


def _table(name: str) -> str:
    if _TABLE_RE.match(name) is None:
        raise ValueError(f"not a table name: {name!r}")
    return name


def counters_insert(table: str, names: str, deltas: str) -> str:
    """Add the deltas to the run ($1) counters; `names` and `deltas` are SQL text[] expressions."""
    t = _table(table)
    return (f"INSERT INTO {t} (platform_run_id, name, value) "
            f"SELECT $1, c.name, c.delta::int8 FROM unnest({names}, {deltas}) AS c(name, delta) "
            f"ON CONFLICT (platform_run_id, name) DO UPDATE SET value = {t}.value + EXCLUDED.value")


def counter_columns(deltas: Mapping[str, int]) -> list[list[str | None]]:
    """The (names, deltas) columns of the non-zero `deltas`, for `pack_columns`."""
    changed = {k: v for k, v in deltas.items() if v}
    return [list(changed), [str(v) for v in changed.values()]]


async def load_counters(conn: Any, table: str, platform_run_id: str) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT name, value FROM {_table(table)} WHERE platform_run_id = $1", platform_run_id)
    return {r["name"]: int(r["value"]) for r in rows}


async def add_counters(conn: Any, table: str, platform_run_id: str, deltas: Mapping[str, int]) -> None:
    """Add the non-zero `deltas` to the run's counters (created at their delta)."""
    columns = counter_columns(deltas)
    if columns[0]:
        await conn.execute(counters_insert(table, *_COLS), platform_run_id, *pack_columns(columns))
