"""Idempotent registration of deterministic ids: NEW, DUPLICATE (same id, same hash) or MISMATCH.

Each component of the plane keeps a ledger table keyed by (platform_run_id, <id>) with the payload
hash it first saw (CaseTrigger's triggers, CM's trigger intake, the Label Store's assertions). A
batch registers all of its ids in one statement; the answer says which are new (to be applied),
which are copies (harmless: the bus may carry a record twice, a replay re-derives the same ids),
and which are changed copies: those are recorded in `cl_mismatches` with both hashes and never
applied (the original is never overwritten).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fraudrt.runtime import pack_columns, split_sql

T = TypeVar("T")

_MISMATCH_SQL = """
INSERT INTO cl_mismatches (component, platform_run_id, kind, id, stored_hash, seen_hash, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT DO NOTHING
"""


@dataclass
class Registered(Generic[T]):
    new: list[T] = field(default_factory=list)
    duplicates: list[T] = field(default_factory=list)
    mismatches: list[T] = field(default_factory=list)


class Ledger:
    """`table` has columns platform_run_id, `columns` (the first is the id, the second the hash)."""

    def __init__(self, table: str, columns: Sequence[str], casts: Sequence[str] | None = None) -> None:
        self.columns = list(columns)
        key, hash_col = self.columns[0], self.columns[1]
        cols = split_sql(len(self.columns), first=2, casts=casts)
        names = ", ".join(self.columns)
        self.sql = f"""
WITH input AS (SELECT * FROM unnest({", ".join(cols)}) AS t({names})),
ins AS (INSERT INTO {table} (platform_run_id, {names}) SELECT $1, {names} FROM input
        ON CONFLICT DO NOTHING RETURNING {key})
SELECT i.{key} AS id, ins.{key} IS NOT NULL AS inserted, old.{hash_col} AS stored
  FROM input i
  LEFT JOIN ins ON ins.{key} = i.{key}
  LEFT JOIN LATERAL (SELECT o.{hash_col} FROM {table} o
                      WHERE ins.{key} IS NULL AND o.platform_run_id = $1 AND o.{key} = i.{key}) AS old ON true
"""

    async def register(self, conn: Any, platform_run_id: str, items: Sequence[T], rows: Sequence[Sequence[str | None]],
                       *, component: str, kind: str, payload_of: Any = None) -> Registered[T]:
        """Register `items` (row i = the ledger columns of item i, id first, hash second), in order."""
        out: Registered[T] = Registered()
        first: dict[str, tuple[int, str]] = {}
        todo: list[int] = []
        for i, row in enumerate(rows):
            rid, h = row[0], row[1]
            assert rid is not None and h is not None
            seen = first.get(rid)
            if seen is None:
                first[rid] = (i, h)
                todo.append(i)
            elif seen[1] == h:
                out.duplicates.append(items[i])
            else:
                await self._mismatch(conn, platform_run_id, component, kind, rid, seen[1], h, payload_of, items[i])
                out.mismatches.append(items[i])
        if not todo:
            return out
        columns = [[rows[i][c] for i in todo] for c in range(len(self.columns))]
        result = {r["id"]: r for r in await conn.fetch(self.sql, platform_run_id, *pack_columns(columns))}
        for i in todo:
            rid, h = rows[i][0], rows[i][1]
            assert rid is not None and h is not None
            r = result[rid]
            if r["inserted"]:
                out.new.append(items[i])
            elif r["stored"] == h:
                out.duplicates.append(items[i])
            else:
                await self._mismatch(conn, platform_run_id, component, kind, rid, r["stored"], h, payload_of, items[i])
                out.mismatches.append(items[i])
        return out

    @staticmethod
    async def _mismatch(conn: Any, run: str, component: str, kind: str, rid: str, stored: str | None, seen: str,
                        payload_of: Any, item: Any) -> None:
        await conn.execute(_MISMATCH_SQL, component, run, kind, rid, stored, seen,
                           payload_of(item) if payload_of is not None else None)
