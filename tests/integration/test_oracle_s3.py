"""The oracle against the session's SeaweedFS: sync, conditional-put seal, check, and the stream-sort job.

Each test works under its own engine-run-root prefix (`t<uuid>/<run_id>`) in the oracle bucket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))  # tests.support

from fraudrt.engine import GenerateRequest, generate_world
from fraudrt.oracle import (
    CheckRequest,
    OracleConflict,
    PackRequest,
    SyncRequest,
    _store,
    check_engine_root,
    job_status,
    pack_engine_root,
    sync_engine_root,
)
from fraudrt.substrate import s3_client
from tests.support.engine_layout import as_real_engine

pytestmark = pytest.mark.integration

SCENARIO = "baseline_v1"


@pytest.fixture(scope="module")
def local_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("oracle-world")
    return Path(generate_world(GenerateRequest(out_dir=str(out), n_flows=3_000, seed=11)).engine_run_root)


@pytest.fixture
def root(local_world: Path, settings: Settings) -> str:
    return f"s3://{settings.buckets.oracle}/t{uuid.uuid4().hex[:10]}/{local_world.name}"


def _sync(settings: Settings, source: Path, root: str) -> Any:
    return anyio.run(sync_engine_root, settings, SyncRequest(source=str(source), engine_run_root=root))


async def _s3(settings: Settings, op: str, key: str, **kw: Any) -> Any:
    async with s3_client(settings.s3) as c:
        return await getattr(c, op)(Bucket=settings.buckets.oracle, Key=key, **kw)


def _key(root: str, rel: str) -> str:
    return root.split("/", 3)[3] + "/" + rel


def test_sync_is_idempotent_and_verified(local_world: Path, settings: Settings, root: str, tmp_path: Path) -> None:
    n_files = sum(1 for p in local_world.rglob("*") if p.is_file())
    first = _sync(settings, local_world, root)
    assert (first.files, first.uploaded, first.skipped, first.verified) == (n_files, n_files, 0, n_files)
    head = anyio.run(_s3, settings, "head_object", _key(root, "run_receipt.json"))
    assert len(head["Metadata"]["sha256"]) == 64
    again = _sync(settings, local_world, root)
    assert (again.uploaded, again.skipped) == (0, n_files)


def test_sync_uploads_changed_and_large_files_multipart(
    local_world: Path, settings: Settings, root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    world = tmp_path / local_world.name
    shutil.copytree(local_world, world)
    _sync(settings, world, root)
    monkeypatch.setattr(_store, "MULTIPART_THRESHOLD", 6 * 1024 * 1024)
    monkeypatch.setattr(_store, "MULTIPART_PART_SIZE", 5 * 1024 * 1024)
    blob = os.urandom(13 * 1024 * 1024)
    (world / "data" / "extra.bin").write_bytes(blob)
    result = _sync(settings, world, root)
    assert result.uploaded == 1
    assert anyio.run(_read_obj, settings, f"{root}/data/extra.bin") == blob
    got = anyio.run(_s3, settings, "head_object", _key(root, "data/extra.bin"))
    assert "-" in got["ETag"]  # a multipart ETag: <md5 of part md5s>-<parts>


def test_seal_is_write_once_on_s3(local_world: Path, settings: Settings, root: str) -> None:
    _sync(settings, local_world, root)
    req = PackRequest(engine_run_root=root, scenario_id=SCENARIO, engine_release="local")
    first = anyio.run(pack_engine_root, settings, req)
    assert first.manifest_written and first.seal_written
    second = anyio.run(pack_engine_root, settings, req)
    assert not second.manifest_written and not second.seal_written
    with pytest.raises(OracleConflict) as err:
        anyio.run(pack_engine_root, settings, PackRequest(engine_run_root=root, scenario_id="other_v2"))
    assert err.value.code == "PACK_CONFLICT"
    # The server itself refuses the overwrite (If-None-Match), not only our pre-check.
    from fraudrt.oracle._store import S3Store

    async def raw_put() -> bool:
        async with s3_client(settings.s3) as c:
            return await S3Store(c, settings.buckets.oracle).put_bytes(
                _key(root, "_SEALED.json"), b"{}", if_none_match=True
            )

    assert anyio.run(raw_put) is False


def test_strict_check_on_s3_lists_all_problems(local_world: Path, settings: Settings, root: str) -> None:
    _sync(settings, local_world, root)
    clean = anyio.run(check_engine_root, settings, CheckRequest(engine_run_root=root, scenario_id=SCENARIO))
    assert clean.status == "WARN" and {i.code for i in clean.issues} == {"PACK_MANIFEST_MISSING", "PACK_NOT_SEALED"}
    flag = next(p for p in local_world.glob("data/layer3/6B/validation/*/_passed.flag"))
    anyio.run(_s3, settings, "delete_object", _key(root, flag.relative_to(local_world).as_posix()))
    strict = anyio.run(
        check_engine_root, settings, CheckRequest(engine_run_root=root, scenario_id=SCENARIO, strict=True)
    )
    codes = {i.code for i in strict.issues if i.severity == "ERROR"}
    assert strict.status == "FAIL" and {"GATE_FLAG_MISSING", "PACK_NOT_SEALED", "PACK_MANIFEST_MISSING"} <= codes
    assert strict.files_checked >= 6  # the column/partition checks read parquet from S3 with polars


def test_strict_check_passes_a_world_laid_out_like_a_real_engine_on_s3(
    local_world: Path, settings: Settings, root: str, tmp_path: Path
) -> None:
    import shutil

    world = tmp_path / local_world.name
    shutil.copytree(local_world, world)
    as_real_engine(world)  # array/`artifacts` index.json, an optional column left out, no statistics
    _sync(settings, world, root)
    anyio.run(pack_engine_root, settings, PackRequest(engine_run_root=root, scenario_id=SCENARIO))
    report = anyio.run(
        check_engine_root, settings, CheckRequest(engine_run_root=root, scenario_id=SCENARIO, strict=True)
    )
    assert report.status == "OK", report.issues
    assert len(report.gates_checked) == 2 and report.files_checked >= 6


def _cli(substrate: Any, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fraudrt", "oracle", *args],
        env={**os.environ, **substrate.env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_stream_sort_job_end_to_end(local_world: Path, settings: Settings, substrate: Any, root: str) -> None:
    assert _cli(substrate, "sync", "--source", str(local_world), "--engine-run-root", root).returncode == 0
    packed = _cli(substrate, "pack", "--engine-run-root", root, "--scenario-id", SCENARIO, "--engine-release", "local")
    assert packed.returncode == 0, packed.stderr
    checked = _cli(substrate, "check", "--strict", "--engine-run-root", root, "--scenario-id", SCENARIO)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    args = ["stream-sort", "--engine-run-root", root, "--scenario-id", SCENARIO, "--rows-per-part", "1000"]
    run = _cli(substrate, *args, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    status = json.loads(run.stdout)
    assert status["state"] == "SUCCEEDED"
    outputs = {o["output_id"]: o for o in status["outputs"]}
    assert set(outputs) == {
        "arrival_events_5B",
        "s1_arrival_entities_6B",
        "s3_flow_anchor_with_fraud_6B",
        "s3_event_stream_with_fraud_6B",
    }
    assert outputs["s3_event_stream_with_fraud_6B"]["rows"] == 6_000
    assert all(o["status"] == "SORTED" for o in outputs.values())
    # The job's own files.
    job_dir = Path(substrate.settings.home) / "jobs" / status["job_id"]
    assert (job_dir / "status.json").is_file() and (job_dir / "job.log").stat().st_size > 0

    # Reader's view of one output: receipt -> manifest -> parts in order, sorted by ts.
    import polars as pl

    from fraudrt.substrate import polars_storage_options

    view = f"{root}/stream_view/ts_utc/output_id=s3_event_stream_with_fraud_6B/"
    receipt = json.loads(anyio.run(_read_obj, settings, view + "_stream_sort_receipt.json"))
    manifest = json.loads(anyio.run(_read_obj, settings, view + "_stream_view_manifest.json"))
    assert receipt["status"] == "OK" and receipt["raw_stats"]["row_count"] == 6_000
    opts = polars_storage_options(settings.s3)
    df = pl.concat([pl.read_parquet(view + p["name"], storage_options=opts) for p in manifest["parts"]])
    assert df.height == 6_000
    assert df["ts_utc"].str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ").is_sorted()

    # Rerun: every output is skipped; detached + job-status works the same way.
    detached = _cli(substrate, *args, "--detach")
    assert detached.returncode == 0, detached.stderr
    job_id = detached.stdout.strip()
    waited = _cli(substrate, "job-status", job_id, "--wait", "--json")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert {o["status"] for o in json.loads(waited.stdout)["outputs"]} == {"SKIPPED"}


async def _read_obj(settings: Settings, uri: str) -> bytes:
    bucket, _, key = uri[5:].partition("/")
    async with s3_client(settings.s3) as c:
        resp = await c.get_object(Bucket=bucket, Key=key)
        async with resp["Body"] as body:
            return bytes(await body.read())


def test_crashed_job_is_reported_and_its_partial_view_rebuilt(
    settings: Settings, substrate: Any, tmp_path: Path
) -> None:
    # A world big enough that the sort is still running when we kill it.
    world = Path(generate_world(GenerateRequest(out_dir=str(tmp_path), n_flows=400_000, seed=5)).engine_run_root)
    root = f"s3://{settings.buckets.oracle}/t{uuid.uuid4().hex[:10]}/{world.name}"
    assert _cli(substrate, "sync", "--source", str(world), "--engine-run-root", root).returncode == 0
    args = [
        "stream-sort",
        "--engine-run-root",
        root,
        "--scenario-id",
        SCENARIO,
        "--output-id",
        "s3_event_stream_with_fraud_6B",
        "--rows-per-part",
        "50000",
        "--memory-mb",
        "64",
    ]
    detached = _cli(substrate, *args, "--detach")
    assert detached.returncode == 0, detached.stderr
    job_id = detached.stdout.strip()
    view_key = _key(root, "stream_view/ts_utc/output_id=s3_event_stream_with_fraud_6B/")

    async def listing() -> list[str]:
        async with s3_client(settings.s3) as c:
            resp = await c.list_objects_v2(Bucket=settings.buckets.oracle, Prefix=view_key)
            return [o["Key"] for o in resp.get("Contents", [])]

    deadline = time.monotonic() + 120
    pid = None
    while pid is None:
        status = job_status(substrate.settings, job_id)
        assert status.state in ("PENDING", "RUNNING"), status
        assert time.monotonic() < deadline, "job never started"
        pid = status.pid
        time.sleep(0.02)
    while not anyio.run(listing):  # freeze it the moment it has uploaded a part, then kill it
        assert time.monotonic() < deadline, "job never uploaded a part"
        time.sleep(0.02)
    os.kill(pid, signal.SIGSTOP)
    assert not any(k.endswith("_stream_sort_receipt.json") for k in anyio.run(listing)), "killed too late"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (dead := job_status(substrate.settings, job_id)).state in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, dead
        time.sleep(0.1)
    assert dead.state == "FAILED" and dead.error_code == "JOB_DIED"
    assert not any(k.endswith("_stream_sort_receipt.json") for k in anyio.run(listing))

    rerun = _cli(substrate, *args, "--json")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    [out] = json.loads(rerun.stdout)["outputs"]
    assert out["status"] == "SORTED" and out["rebuilt_partial"] and out["rows"] == 800_000
    keys = anyio.run(listing)
    parts = sorted(k for k in keys if k.endswith(".parquet"))
    assert len(parts) == 16 and any(k.endswith("_stream_sort_receipt.json") for k in keys)
