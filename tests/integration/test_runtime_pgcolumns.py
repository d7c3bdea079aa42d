"""Packed batch columns round-trip through the real Postgres exactly, whatever the values hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fraudrt.config import Settings
from fraudrt.runtime._pgcolumns import pack_columns, split_sql


@pytest.fixture
async def conn(settings: Settings) -> AsyncIterator[Any]:
    c = await asyncpg.connect(settings.postgres.dsn)
    try:
        yield c
    finally:
        await c.close()


async def _roundtrip(conn: Any, columns: list[list[str | None]]) -> list[list[str | None]]:
    exprs = split_sql(len(columns))
    row = await conn.fetchrow("SELECT " + ", ".join(exprs), *pack_columns(columns))
    return [list(v) if v is not None else [] for v in row.values()]


# Postgres text holds any character but NUL; surrogates are not valid UTF-8.
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_delims = st.sampled_from(["\x1f", "\x1e", "", "a", "\x1f\x1e"])


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), width=st.integers(1, 3), length=st.integers(0, 6))
async def test_any_values_come_back_as_they_went(conn: Any, data: st.DataObject, width: int, length: int) -> None:
    # Values built from the default separator and marker are the hard case: they force the fallback.
    value = st.one_of(st.none(), _text, st.lists(st.one_of(_text, _delims), max_size=4).map("".join))
    columns = [data.draw(st.lists(value, min_size=length, max_size=length)) for _ in range(width)]
    assert await _roundtrip(conn, columns) == columns


async def test_edge_values_and_the_fallback_delimiters(conn: Any) -> None:
    cases = [
        [[""]],
        [[None]],
        [["", None, ""]],
        [["\x1f"], ["\x1e"]],  # each default delimiter in a value
        [["a\x1fb", "\x1e", None]],
        [["\x01\x02\x03", "\x1f\x1e"]],  # the first free characters are taken too
        [[]],
    ]
    for columns in cases:
        assert await _roundtrip(conn, columns) == columns, columns


async def test_int_columns_cast_and_columns_feed_unnest(conn: Any) -> None:
    exprs = split_sql(2, casts=["int", "text"])
    rows = await conn.fetch(f"SELECT * FROM unnest({exprs[0]}, {exprs[1]}) AS t(n, s)",
                            *pack_columns([["1", "-2", None], ["x", "", "z"]]))
    assert [tuple(r) for r in rows] == [(1, "x"), (-2, ""), (None, "z")]


async def test_parameters_can_follow_other_parameters(conn: Any) -> None:
    exprs = split_sql(1, first=2)
    got = await conn.fetchval(f"SELECT $1::text || array_to_string({exprs[0]}, ',')", "p:",
                              *pack_columns([["a", "b"]]))
    assert got == "p:a,b"
