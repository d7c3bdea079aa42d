"""One migration runner: each component keeps its SQL in a `sql/` folder beside its code.

Files apply once each, in name order, under an advisory lock so two pack processes starting at the
same moment do not race. A file whose content changed after it was applied is an error, not a re-run.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

_LOCK_KEY = 0x66726175  # "frau"

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS rt_schema_migrations (
    component  TEXT NOT NULL,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, name)
)
"""


class MigrationError(Exception):
    pass


def _sql_files(package: str) -> list[tuple[str, str]]:
    folder = resources.files(package).joinpath("sql")
    if not folder.is_dir():
        return []
    files = [(f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql")]
    return sorted(files)


async def apply_migrations(conn: Any, *packages: str) -> list[str]:
    """Apply the `sql/*.sql` of each package (e.g. `fraudrt.runtime`); returns what was applied now."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(_BOOKKEEPING)
        for package in packages:
            for name, sql in _sql_files(package):
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                row = await conn.fetchrow(
                    "SELECT checksum FROM rt_schema_migrations WHERE component = $1 AND name = $2", package, name
                )
                if row is not None:
                    if row["checksum"] != checksum:
                        raise MigrationError(f"{package}/sql/{name} changed after it was applied; "
                                             "add a new migration file instead of editing it")
                    continue
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO rt_schema_migrations (component, name, checksum) VALUES ($1, $2, $3)",
                    package, name, checksum,
                )
                applied.append(f"{package}/{name}")
    return applied
