"""The stream sort's ordering, part cutting, integrity checks and bounded-memory path (local files only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from fraudrt.oracle import OracleError, PartWritten, SortConfig, SourceFile, sort_sources

pytestmark = pytest.mark.unit


def _ts(us: int) -> str:
    return pl.select(pl.from_epoch(pl.lit(us), time_unit="us").dt.strftime("%Y-%m-%dT%H:%M:%S.%6fZ")).item()


def _write(path: Path, rows: list[tuple[str, int, str]], row_group_size: int | None = None) -> SourceFile:
    df = pl.DataFrame(
        {"ts_utc": [r[0] for r in rows], "v": [r[1] for r in rows], "tag": [r[2] for r in rows]},
        schema={"ts_utc": pl.String, "v": pl.Int64, "tag": pl.String},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path, row_group_size=row_group_size)
    return SourceFile(path=str(path), name=f"s3://b/{path.name}")


def _read_parts(parts: list[PartWritten]) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p.path) for p in sorted(parts, key=lambda p: p.index)])


def _run(tmp_path: Path, sources: list[SourceFile], **cfg: object) -> tuple[pl.DataFrame, list[PartWritten]]:
    parts: list[PartWritten] = []
    config = SortConfig(work_dir=str(tmp_path / "work"), **cfg)  # type: ignore[arg-type]
    sort_sources(sources, tmp_path / "out", config, parts.append)
    return _read_parts(parts), parts


def test_ties_on_ts_break_by_filename_then_row_number(tmp_path: Path) -> None:
    t0, t1 = _ts(1_700_000_000_000_000), _ts(1_700_000_000_000_001)
    # b.parquet sorts after a.parquet; each file holds tied timestamps in a non-sorted physical order.
    a = _write(tmp_path / "a.parquet", [(t1, 10, "a0"), (t0, 11, "a1"), (t1, 12, "a2"), (t0, 13, "a3")])
    b = _write(tmp_path / "b.parquet", [(t0, 20, "b0"), (t1, 21, "b1"), (t0, 22, "b2")])
    out, parts = _run(tmp_path, [a, b], rows_per_part=1000)
    assert out["tag"].to_list() == ["a1", "a3", "b0", "b2", "a0", "a2", "b1"]
    assert len(parts) == 1 and parts[0].first_ts == t0 and parts[0].last_ts == t1


@pytest.mark.parametrize(
    "bad",
    [
        "2026-01-01T01:00:00.123456+01:00",  # an offset: the right instant, the wrong text order
        "2026-01-01T00:00:00.5Z",  # 1..5 fractional digits
        "2026-01-01T00:00:00.12345Z",
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.123456",  # no Z
        "2026-01-01 00:00:00.123456Z",  # a space for the T
    ],
)
def test_a_non_canonical_ts_is_refused_naming_file_and_row(tmp_path: Path, bad: str) -> None:
    # WSP merges views by comparing these strings; a value in another form would be ordered by instant
    # here and by text there, so the sort refuses it and says where it is.
    good = [("2026-01-01T00:00:00.000001Z", 1, "a"), ("2026-01-01T00:00:00.000002Z", 2, "b")]
    src = _write(tmp_path / "a.parquet", [*good, (bad, 3, "c"), *good])
    with pytest.raises(OracleError) as err:
        _run(tmp_path, [src])
    assert err.value.code == "TS_NOT_CANONICAL"
    assert src.name in err.value.message and "row 2 " in err.value.message and repr(bad) in err.value.message


def _random_world(tmp_path: Path, n_files: int, rows_per_file: int) -> list[SourceFile]:
    sources = []
    for f in range(n_files):
        idx = pl.int_range(f * rows_per_file, (f + 1) * rows_per_file, eager=True)
        # Coarse timestamps (10 000 distinct values) so ties across files are common.
        us = 1_767_225_600_000_000 + (idx.hash(7) % 10_000).cast(pl.Int64) * 1_000
        df = pl.DataFrame({"us": us, "v": idx, "tag": (idx % 3).cast(pl.String)}).select(
            ts_utc=pl.from_epoch("us", time_unit="us").dt.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"),
            v="v",
            tag=pl.concat_str(pl.lit("k"), "tag"),
        )
        path = tmp_path / "src" / f"part-{f:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.write_parquet(path, row_group_size=1_500)
        sources.append(SourceFile(path=str(path), name=f"s3://b/src/part-{f:05d}.parquet"))
    return sources


def _expected(sources: list[SourceFile]) -> pl.DataFrame:
    frames = [pl.read_parquet(s.path).with_row_index("row").with_columns(file=pl.lit(s.name)) for s in sources]
    return (
        pl.concat(frames)
        .sort(pl.col("ts_utc").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ"), "file", "row")
        .select("ts_utc", "v", "tag")
    )


@pytest.mark.parametrize("external", [False, True])
def test_total_order_and_exact_part_sizes(tmp_path: Path, external: bool) -> None:
    sources = _random_world(tmp_path, n_files=5, rows_per_file=4_000)
    # A tiny budget forces many ranges on the external path; parts cut at exactly 3000 rows.
    cfg: dict[str, object] = {"rows_per_part": 3_000, "force_external": external}
    if external:
        cfg["memory_budget_bytes"] = 200_000
    out, parts = _run(tmp_path, sources, **cfg)
    assert out.equals(_expected(sources))
    assert [p.rows for p in parts] == [3_000] * 6 + [2_000]
    for p in parts:
        meta = pq.ParquetFile(p.path).metadata
        assert meta.num_rows == p.rows
        # Plain string columns for readers (no stored Arrow schema turning them into dictionaries).
        assert pq.read_schema(p.path).field("tag").type == "string"


def test_external_path_splits_into_many_ranges_within_the_budget(tmp_path: Path) -> None:
    sources = _random_world(tmp_path, n_files=4, rows_per_file=5_000)
    parts: list[PartWritten] = []
    cfg = SortConfig(work_dir=str(tmp_path / "w"), memory_budget_bytes=150_000, rows_per_part=2_500)
    stats = sort_sources(sources, tmp_path / "out", cfg, parts.append)
    assert stats.strategy == "external"
    assert stats.units >= 5
    # No range may come near the whole input (the budget holds a few thousand rows here).
    assert stats.max_unit_rows < 20_000 / 3
    assert stats.checksum_in.as_dict() == stats.checksum_out.as_dict()
    assert _read_parts(parts).equals(_expected(sources))
    assert not (tmp_path / "w" / "spill").exists()


def test_skewed_range_is_split_again(tmp_path: Path) -> None:
    # 90% of the rows share one timestamp: the (ts, position) key still splits them.
    t = _ts(1_700_000_000_000_000)
    rows = [(t, i, "same") for i in range(9_000)] + [(_ts(1_700_000_000_000_000 + i), i, "x") for i in range(1_000)]
    src = _write(tmp_path / "a.parquet", rows, row_group_size=1_000)
    parts: list[PartWritten] = []
    cfg = SortConfig(work_dir=str(tmp_path / "w"), memory_budget_bytes=120_000, rows_per_part=4_000)
    stats = sort_sources([src], tmp_path / "out", cfg, parts.append)
    out = _read_parts(parts)
    assert out.height == 10_000
    assert out.filter(pl.col("tag") == "same")["v"].to_list() == list(range(9_000))
    assert stats.units > 2


def test_unparseable_and_null_ts_fail_with_a_reason(tmp_path: Path) -> None:
    bad = _write(tmp_path / "a.parquet", [("2026-13-45T99:00:00.000000Z", 1, "x")])  # the shape, not a date
    with pytest.raises(OracleError) as err:
        _run(tmp_path, [bad])
    assert err.value.code == "TS_UNPARSEABLE"
    with pytest.raises(OracleError) as err:
        _run(tmp_path, [_write(tmp_path / "b.parquet", [("yesterday", 1, "x")])])
    assert err.value.code == "TS_NOT_CANONICAL"
    df = pl.DataFrame(
        {"ts_utc": [None], "v": [1], "tag": ["x"]}, schema={"ts_utc": pl.String, "v": pl.Int64, "tag": pl.String}
    )
    df.write_parquet(tmp_path / "n.parquet")
    with pytest.raises(OracleError) as err:
        _run(tmp_path, [SourceFile(path=str(tmp_path / "n.parquet"), name="n")])
    assert err.value.code == "TS_NULL"


def test_schema_drift_between_files_is_refused(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.parquet", [(_ts(1), 1, "x")])
    pl.DataFrame({"ts_utc": [_ts(2)], "v": [1.5], "tag": ["y"]}).write_parquet(tmp_path / "b.parquet")
    with pytest.raises(OracleError) as err:
        _run(tmp_path, [a, SourceFile(path=str(tmp_path / "b.parquet"), name="b")])
    assert err.value.code == "SCHEMA_DRIFT"


def test_checksum_detects_a_changed_row(tmp_path: Path) -> None:
    from fraudrt.oracle._sort import RowChecksum

    df = pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    c1, c2, c3 = RowChecksum(), RowChecksum(), RowChecksum()
    c1.add(df)
    c2.add(df.reverse())  # order-independent
    c3.add(df.with_columns(pl.when(pl.col("a") == 2).then(pl.lit("Y")).otherwise("b").alias("b")))
    assert c1.as_dict() == c2.as_dict()
    assert c1.as_dict() != c3.as_dict()


def test_a_failing_consumer_never_leaves_the_read_ahead_thread_blocked() -> None:
    """The reader has produced its last frame and waits to hand over the end marker on a full queue
    when the consumer fails (a spill write on a full disk): closing the generator must not hang."""
    import threading

    from fraudrt.oracle._sort import _PREFETCH_DEPTH, _prefetch

    exhausted = threading.Event()

    def frames() -> Iterator[pl.DataFrame]:
        for i in range(_PREFETCH_DEPTH + 1):  # one in the consumer's hands, `depth` queued
            yield pl.DataFrame({"i": [i]})
        exhausted.set()  # next: the end marker, into a full queue

    def consume() -> None:
        gen = _prefetch(frames())
        next(gen)
        assert exhausted.wait(10), "the reader never reached the end of its input"
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            gen.close()  # what unwinding the consumer's frame does to the generator

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "closing the read-ahead generator hung on its reader thread"
    assert not any(t.name == "source-reader" for t in threading.enumerate())


def test_a_skewed_range_splits_even_when_its_rows_share_a_position_remainder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even rows carry spread-out early times, odd rows all carry one later time. A sample that keeps
    every k-th row by global position (k even) sees only even rows: the top-level cuts all fall in
    the early part, the last range gets every odd row, and re-splitting that range by the same
    global-position rule again sees only its few even rows. Sampling by position within the range
    sees what the range holds, so the hot range is cut into pieces the budget can sort."""
    from fraudrt.oracle import _sort

    monkeypatch.setattr(_sort, "_SAMPLE_TARGET", 100)  # a stride of 200 rows over 20 000, as 400 k does over 80 M
    n = 20_000
    idx = pl.int_range(0, n, eager=True)
    us = pl.when(idx % 2 == 0).then(1_700_000_000_000_000 + idx).otherwise(1_700_000_100_000_000)
    df = pl.DataFrame({"us": idx}).select(
        ts_utc=pl.from_epoch(us, time_unit="us").dt.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"),
        v=idx,
        tag=pl.lit("t"),
    )
    path = tmp_path / "skew.parquet"
    df.write_parquet(path, row_group_size=2_000)
    parts: list[PartWritten] = []
    cfg = SortConfig(work_dir=str(tmp_path / "w"), memory_budget_bytes=120_000, rows_per_part=5_000)
    stats = sort_sources([SourceFile(path=str(path), name="s3://b/skew.parquet")], tmp_path / "out", cfg, parts.append)
    out = _read_parts(parts)
    assert out.height == n and out["v"].to_list() == [*range(0, n, 2), *range(1, n, 2)]
    # The budget holds ~1 000 rows per unit here; no unit may hold the 10 000 hot rows.
    assert stats.max_unit_rows <= 1_500, stats
