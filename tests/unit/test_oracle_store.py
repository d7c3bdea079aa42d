"""Pack/seal write-once, the strict checker and the stream-sort commit protocol, on a local engine root.

The local store behaves like the bucket (write-once by link(2)); the same code runs against S3 in
tests/integration/test_oracle_s3.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import polars as pl
import pytest

from fraudrt.config import load_settings
from fraudrt.engine import GenerateRequest, generate_world
from fraudrt.oracle import (
    CheckRequest,
    OracleConflict,
    OracleError,
    PackRequest,
    StreamSortRequest,
    check_engine_root,
    pack_engine_root,
    stream_sort,
)

pytestmark = pytest.mark.unit

SCENARIO = "baseline_v1"


@pytest.fixture(scope="module")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(GenerateRequest(out_dir=str(out), n_flows=2_000, seed=7))
    return Path(summary.engine_run_root)


@pytest.fixture
def world(world_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / world_template.name
    shutil.copytree(world_template, target)
    return target


@pytest.fixture
def settings():  # type: ignore[no-untyped-def]
    return load_settings("embedded")


def _run(fn, *args):  # type: ignore[no-untyped-def]
    return anyio.run(fn, *args)


def test_pack_is_write_once_and_a_different_world_conflicts(world: Path, settings) -> None:  # type: ignore[no-untyped-def]
    req = PackRequest(engine_run_root=str(world), scenario_id=SCENARIO, engine_release="local")
    first = _run(pack_engine_root, settings, req)
    assert first.manifest_written and first.seal_written
    manifest = (world / "_oracle_pack_manifest.json").read_bytes()
    again = _run(pack_engine_root, settings, req)
    assert (again.manifest_written, again.seal_written) == (False, False)
    assert again.oracle_pack_id == first.oracle_pack_id
    assert (world / "_oracle_pack_manifest.json").read_bytes() == manifest  # not rewritten
    with pytest.raises(OracleConflict) as err:
        _run(
            pack_engine_root,
            settings,
            PackRequest(engine_run_root=str(world), scenario_id=SCENARIO, engine_release="other"),
        )
    assert err.value.code == "PACK_CONFLICT"
    assert "engine_release" in err.value.message
    assert (world / "_oracle_pack_manifest.json").read_bytes() == manifest


def _codes(report) -> set[str]:  # type: ignore[no-untyped-def]
    return {i.code for i in report.issues if i.severity == "ERROR"}


def test_check_passes_on_a_clean_sealed_world(world: Path, settings) -> None:  # type: ignore[no-untyped-def]
    _run(pack_engine_root, settings, PackRequest(engine_run_root=str(world), scenario_id=SCENARIO))
    report = _run(
        check_engine_root, settings, CheckRequest(engine_run_root=str(world), scenario_id=SCENARIO, strict=True)
    )
    assert report.status == "OK", report.issues
    assert report.files_checked >= 6 and len(report.gates_checked) == 2


def test_strict_check_reports_every_problem(world: Path, settings) -> None:  # type: ignore[no-untyped-def]
    # Unsealed + a gate flag removed + a column dropped from one file + a row whose partition value
    # disagrees with its path: all four must be reported in one run.
    (next(world.glob("data/layer2/5B/validation/*/_passed.flag"))).unlink()
    anchor = sorted(world.glob("data/layer3/6B/s3_flow_anchor_with_fraud_6B/**/part-*.parquet"))[0]
    pl.read_parquet(anchor).drop("device_id").write_parquet(anchor)
    events = sorted(world.glob("data/layer3/6B/s3_event_stream_with_fraud_6B/**/part-*.parquet"))[1]
    df = pl.read_parquet(events)
    df.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("other_v9")).otherwise("scenario_id").alias("scenario_id")
    ).write_parquet(events)
    report = _run(
        check_engine_root, settings, CheckRequest(engine_run_root=str(world), scenario_id=SCENARIO, strict=True)
    )
    assert report.status == "FAIL"
    codes = _codes(report)
    assert {
        "PACK_NOT_SEALED",
        "PACK_MANIFEST_MISSING",
        "GATE_FLAG_MISSING",
        "OUTPUT_COLUMN_MISSING",
        "PARTITION_VALUE_MISMATCH",
    } <= codes, report.issues
    mismatch = next(i for i in report.issues if i.code == "PARTITION_VALUE_MISMATCH")
    assert "other_v9" in mismatch.detail and events.name in mismatch.path
    # Without --strict the missing seal is only a warning; the data problems stay errors.
    lax = _run(check_engine_root, settings, CheckRequest(engine_run_root=str(world), scenario_id=SCENARIO))
    assert "PACK_NOT_SEALED" not in _codes(lax) and "GATE_FLAG_MISSING" in _codes(lax)


def test_check_detects_a_tampered_gate_member(world: Path, settings) -> None:  # type: ignore[no-untyped-def]
    bundle = next(world.glob("data/layer3/6B/validation/*"))
    member = next(p for p in bundle.iterdir() if p.name not in ("_passed.flag", "index.json"))
    member.write_bytes(member.read_bytes() + b" ")
    report = _run(check_engine_root, settings, CheckRequest(engine_run_root=str(world), scenario_id=SCENARIO))
    assert "GATE_MEMBER_DIGEST_MISMATCH" in _codes(report)


def _view(world: Path, output_id: str) -> Path:
    return world / "stream_view" / "ts_utc" / f"output_id={output_id}"


OUT = "s3_event_stream_with_fraud_6B"


def _sort(world: Path, settings, **kw):  # type: ignore[no-untyped-def]
    req = StreamSortRequest(
        engine_run_root=str(world), scenario_id=SCENARIO, output_ids=(OUT,), rows_per_part=1_000, **kw
    )
    return _run(stream_sort, settings, req)


def test_stream_sort_writes_receipt_and_skips_on_rerun(world: Path, settings) -> None:  # type: ignore[no-untyped-def]
    [res] = _sort(world, settings)
    assert res.status == "SORTED" and res.rows == 4_000 and res.parts == 4
    view = _view(world, OUT)
    receipt = json.loads((view / "_stream_sort_receipt.json").read_text())
    manifest = json.loads((view / "_stream_view_manifest.json").read_text())
    assert receipt["status"] == "OK" and receipt["raw_stats"] == receipt["sorted_stats"]
    assert receipt["raw_stats"]["row_count"] == 4_000
    assert [p["name"] for p in manifest["parts"]] == [f"part-{i:06d}.parquet" for i in range(4)]
    out = pl.concat([pl.read_parquet(view / p["name"]) for p in manifest["parts"]])
    ts = out["ts_utc"].str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ")
    assert ts.is_sorted() and manifest["min_ts_utc"] == out["ts_utc"][0]
    mtime = (view / "part-000000.parquet").stat().st_mtime_ns
    [again] = _sort(world, settings)
    assert again.status == "SKIPPED" and again.stream_view_id == res.stream_view_id
    assert (view / "part-000000.parquet").stat().st_mtime_ns == mtime


def test_stream_sort_receipt_for_a_different_input_conflicts(world: Path, settings) -> None:  # type: ignore[no-untyped-def]
    _sort(world, settings)
    # The world changes under the same root (a source file rewritten): the receipt no longer matches.
    src = sorted(world.glob("data/layer3/6B/s3_event_stream_with_fraud_6B/**/part-*.parquet"))[0]
    pl.read_parquet(src).head(10).write_parquet(src)
    with pytest.raises(OracleConflict) as err:
        _sort(world, settings)
    assert err.value.code == "STREAM_RECEIPT_CONFLICT" and "sources" in err.value.message


def test_partial_view_from_a_crash_is_rebuilt(world: Path, settings) -> None:  # type: ignore[no-untyped-def]
    _sort(world, settings)
    view = _view(world, OUT)
    good = {p.name: p.read_bytes() for p in view.glob("part-*.parquet")}
    # Simulate a crash mid-build: the receipt never got written, a stale extra part is left behind.
    (view / "_stream_sort_receipt.json").unlink()
    (view / "part-000099.parquet").write_bytes(b"garbage from a dead attempt")
    [res] = _sort(world, settings)
    assert res.status == "SORTED" and res.rebuilt_partial and res.stale_objects_deleted >= 2
    assert sorted(p.name for p in view.glob("part-*.parquet")) == sorted(good)
    assert (view / "_stream_sort_receipt.json").is_file()


def test_receipt_with_missing_parts_is_corrupt_not_skipped(world: Path, settings) -> None:  # type: ignore[no-untyped-def]
    _sort(world, settings)
    (_view(world, OUT) / "part-000001.parquet").unlink()
    with pytest.raises(OracleError) as err:
        _sort(world, settings)
    assert err.value.code == "STREAM_VIEW_CORRUPT"


def test_tiny_memory_budget_takes_the_external_path(world: Path, settings) -> None:  # type: ignore[no-untyped-def]
    [small] = _sort(world, settings, memory_mb=64, force_external=True)
    assert small.strategy == "external" and small.rows == 4_000


class _StubS3:
    """put_object answers a scripted sequence of S3 errors (by code and HTTP status), then succeeds."""

    def __init__(self, *answers: tuple[str, int]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def put_object(self, **kwargs: object) -> dict[str, object]:
        from botocore.exceptions import ClientError

        self.calls += 1
        if self.answers:
            code, status = self.answers.pop(0)
            raise ClientError(
                {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                "PutObject",
            )
        return {}


def _put(client: _StubS3, *, if_none_match: bool = True) -> bool:
    from fraudrt.oracle._store import S3Store

    async def go() -> bool:
        return await S3Store(client, "oracle-store").put_bytes("r/_SEALED.json", b"{}", if_none_match=if_none_match)

    return anyio.run(go)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    from fraudrt.oracle import _store

    monkeypatch.setattr(_store, "PUT_BACKOFF_S", 0.0, raising=False)


def test_a_409_conditional_conflict_is_retried_not_taken_for_an_existing_object(no_backoff: None) -> None:
    # S3 answers 409 ConditionalRequestConflict while a conflicting write of the key is in progress:
    # nothing exists yet, the put must be tried again.
    client = _StubS3(("ConditionalRequestConflict", 409), ("ConditionalRequestConflict", 409))
    assert _put(client) is True and client.calls == 3


def test_only_a_412_means_the_object_exists(no_backoff: None) -> None:
    client = _StubS3(("PreconditionFailed", 412))
    assert _put(client) is False and client.calls == 1
    # Without If-None-Match a 412 is no answer to anything we asked: it is raised.
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError):
        _put(_StubS3(("PreconditionFailed", 412)), if_none_match=False)


def test_conflict_retries_are_bounded_and_end_in_a_named_error(no_backoff: None) -> None:
    from fraudrt.oracle._store import PUT_ATTEMPTS

    client = _StubS3(*[("ConditionalRequestConflict", 409)] * 50)
    with pytest.raises(OracleError) as err:
        _put(client)
    assert err.value.code == "STORE_WRITE_FAILED" and "ConditionalRequestConflict" in err.value.message
    assert client.calls == PUT_ATTEMPTS


def test_a_permanent_put_error_is_not_retried(no_backoff: None) -> None:
    from botocore.exceptions import ClientError

    client = _StubS3(("InvalidArgument", 400))
    with pytest.raises(ClientError):
        _put(client)
    assert client.calls == 1


def test_a_non_canonical_ts_fails_the_stream_sort_naming_output_file_and_row(world: Path, settings) -> None:  # type: ignore[no-untyped-def]
    src = sorted(world.glob("data/layer3/6B/s3_event_stream_with_fraud_6B/**/part-*.parquet"))[1]
    import pyarrow.parquet as pq

    schema = pq.read_schema(src)
    shifted = pl.read_parquet(src).with_columns(
        pl.when(pl.int_range(pl.len()) == 7)
        .then(pl.col("ts_utc").str.replace("Z$", "+00:00"))
        .otherwise("ts_utc")
        .alias("ts_utc")
    )
    pq.write_table(shifted.to_arrow().cast(schema), src)  # the same schema as its siblings
    with pytest.raises(OracleError) as err:
        _sort(world, settings)
    assert err.value.code == "TS_NOT_CANONICAL"
    message = err.value.message
    assert message.startswith(f"{OUT}: ") and src.name in message and "row 7 " in message and "+00:00" in message
    assert not (_view(world, OUT) / "_stream_sort_receipt.json").exists()
