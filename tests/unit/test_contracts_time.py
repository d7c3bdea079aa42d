"""ts_utc formatting/parsing and platform_run_id minting."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from fraudrt.contracts import (
    PLATFORM_RUN_ID_RE,
    format_ts_utc,
    is_platform_run_id,
    is_ts_utc,
    mint_platform_run_id,
    parse_ts_utc,
    utc_now_ts,
)

pytestmark = pytest.mark.unit

REFERENCE_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def test_format_has_six_digits_and_z() -> None:
    dt = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert format_ts_utc(dt) == "2026-01-02T03:04:05.678901Z"


def test_format_keeps_zero_fraction_and_pads_year() -> None:
    assert format_ts_utc(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"
    assert format_ts_utc(datetime(5, 6, 7, 8, 9, 10, 11, tzinfo=UTC)) == "0005-06-07T08:09:10.000011Z"


def test_format_converts_other_offsets_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_ts_utc(datetime(2026, 1, 1, 1, 30, tzinfo=plus_two)) == "2025-12-31T23:30:00.000000Z"


def test_format_refuses_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_ts_utc(datetime(2026, 1, 1))


def test_round_trip() -> None:
    dt = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    parsed = parse_ts_utc(format_ts_utc(dt))
    assert parsed == dt
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "bad",
    [
        "2026-01-02T03:04:05.678901+00:00",
        "2026-01-02T03:04:05Z",
        "2026-01-02T03:04:05.678Z",
        "2026-01-02T03:04:05.6789012Z",
        "2026-01-02T03:04:05.678901z",
        "2026-01-02 03:04:05.678901Z",
        "2026-01-02T03:04:05.678901Z\n",
        " 2026-01-02T03:04:05.678901Z",
        "2026-01-02T03:04:05.67890١Z",  # Arabic-Indic digit: `\d` would accept it
        "2026-02-30T00:00:00.000000Z",
        "2025-02-29T00:00:00.000000Z",
        "2026-13-01T00:00:00.000000Z",
        "2026-01-01T24:00:00.000000Z",
        "2026-01-01T00:60:00.000000Z",
        "2026-01-01T00:00:60.000000Z",
        "",
    ],
)
def test_parse_is_strict(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_ts_utc(bad)
    assert not is_ts_utc(bad)


def test_parse_refuses_non_string() -> None:
    with pytest.raises(ValueError):
        parse_ts_utc(12345)  # type: ignore[arg-type]


def test_utc_now_ts_is_current_and_well_formed() -> None:
    before = datetime.now(UTC)
    stamp = utc_now_ts()
    after = datetime.now(UTC)
    assert REFERENCE_TS_RE.match(stamp)
    assert before - timedelta(microseconds=1) <= parse_ts_utc(stamp) <= after


def test_formatted_values_sort_like_time() -> None:
    times = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=n * 7919) for n in range(200)]
    stamps = [format_ts_utc(t) for t in times]
    assert sorted(stamps) == stamps


def test_mint_platform_run_id() -> None:
    now = datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=UTC)
    assert mint_platform_run_id(now) == "platform_20260304T050607Z"
    plus_one = timezone(timedelta(hours=1))
    assert mint_platform_run_id(datetime(2026, 1, 1, 0, 30, tzinfo=plus_one)) == "platform_20251231T233000Z"
    assert is_platform_run_id(mint_platform_run_id())
    with pytest.raises(ValueError, match="naive"):
        mint_platform_run_id(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    "value",
    [
        "platform_20260101T000000",
        "platform_20260101T000000z",
        "platform_20260101T000000Z\n",
        "Platform_20260101T000000Z",
        "platform_2026011T000000Z",
        "x_platform_20260101T000000Z",
        None,
        20260101,
    ],
)
def test_is_platform_run_id_rejects(value: object) -> None:
    assert not is_platform_run_id(value)


def test_platform_run_id_re_matches_reference_shape() -> None:
    assert PLATFORM_RUN_ID_RE.match("platform_20260208T151238Z")
