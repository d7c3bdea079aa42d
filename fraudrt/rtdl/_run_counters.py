"""Per-run counters kept in Postgres beside a component's state, so a restart resumes them exactly.

A component adds its batch's deltas in the batch transaction (one statement, whatever the number of
counters) and loads the totals once at start: the health files' totals (the closeout reads
`intake_total == outcome_total`) never depend on how often the process restarted, and nothing is
recounted by scanning the run. The table is the component's own (`<table>(platform_run_id, name,
value)`, primary key on the first two).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from fraudrt.runtime import pack_columns, split_sql

_TABLE_RE: Final = re.compile(r"^[a-z][a-z0-9_]*\Z")
_COLS: Final = split_sql(2, first=2, casts=["text", "int8"])


def _table(name: str) -> str:
    if _TABLE_RE.match(name) is None:
        raise ValueError(f"not a table name: {name!r}")
    return name


async def load_counters(conn: Any, table: str, platform_run_id: str) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT name, value FROM {_table(table)} WHERE platform_run_id = $1", platform_run_id)
    return {r["name"]: int(r["value"]) for r in rows}


async def add_counters(conn: Any, table: str, platform_run_id: str, deltas: Mapping[str, int]) -> None:
    """Add the non-zero `deltas` to the run's counters (created at their delta)."""
    changed = {k: v for k, v in deltas.items() if v}
    if not changed:
        return
    await conn.execute(
        f"INSERT INTO {_table(table)} (platform_run_id, name, value) "
        f"SELECT $1, t.name, t.delta FROM unnest({_COLS[0]}, {_COLS[1]}) AS t(name, delta) "
        "ON CONFLICT (platform_run_id, name) DO UPDATE SET value = "
        f"{_table(table)}.value + EXCLUDED.value",
        platform_run_id, *pack_columns([list(changed), [str(v) for v in changed.values()]]))
