"""Health/metrics report shapes, their paths, and the atomic publish."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fraudrt.contracts import (
    HealthReport,
    HealthState,
    MetricsReport,
    health_path,
    metrics_path,
    write_json_atomic,
)

pytestmark = pytest.mark.unit

PRID = "platform_20260101T000000Z"
TS = "2026-01-01T00:00:00.000000Z"


def test_paths_are_exactly_the_seed_layout(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert health_path(runs, PRID, "decision_fabric") == (
        runs / "fraud-platform" / PRID / "decision_fabric" / "health" / "last_health.json"
    )
    assert metrics_path(runs, PRID, "decision_fabric") == (
        runs / "fraud-platform" / PRID / "decision_fabric" / "metrics" / "last_metrics.json"
    )


@pytest.mark.parametrize(
    ("run", "component"),
    [
        ("../etc", "decision_fabric"),
        ("platform_2026", "decision_fabric"),
        (PRID, "../decision_fabric"),
        (PRID, "DF"),
        (PRID, ""),
        (PRID, "a/b"),
    ],
)
def test_paths_refuse_unsafe_names(tmp_path: Path, run: str, component: str) -> None:
    with pytest.raises(ValueError):
        health_path(tmp_path, run, component)
    with pytest.raises(ValueError):
        metrics_path(tmp_path, run, component)


def test_health_state_values() -> None:
    assert [s.value for s in HealthState] == ["GREEN", "AMBER", "RED"]
    assert HealthState.RED == "RED"


def test_health_report_round_trip_through_file(tmp_path: Path) -> None:
    report = HealthReport(
        component="decision_fabric",
        platform_run_id=PRID,
        health_state=HealthState.AMBER,
        reasons=["CHECKPOINT_OLD"],
        generated_at_utc=TS,
        details={"lag_seconds": 12.5},
    )
    path = health_path(tmp_path, PRID, "decision_fabric")
    write_json_atomic(path, report)
    on_disk = json.loads(path.read_text())
    assert on_disk["health_state"] == "AMBER"
    assert on_disk["reasons"] == ["CHECKPOINT_OLD"]
    assert msgspec.json.decode(path.read_bytes(), type=HealthReport) == report
    assert path.stat().st_mode & 0o777 == 0o644


def test_metrics_report_round_trip(tmp_path: Path) -> None:
    report = MetricsReport(
        component="ingestion_gate",
        platform_run_id=PRID,
        generated_at_utc=TS,
        counters={"decision.ADMIT": 200, "admission_seconds_sum": 1.5},
        gauges={"lag_seconds": 0.25, "watermark_ts_utc": TS, "oldest": None},
    )
    path = metrics_path(tmp_path, PRID, "ingestion_gate")
    write_json_atomic(path, report)
    assert msgspec.json.decode(path.read_bytes(), type=MetricsReport) == report


@pytest.mark.parametrize(
    "change",
    [
        {"health_state": "PURPLE"},
        {"generated_at_utc": "2026-01-01T00:00:00+00:00"},
        {"platform_run_id": "run-1"},
        {"extra": 1},
    ],
)
def test_health_report_decode_is_strict(change: dict[str, Any]) -> None:
    data = {
        "component": "x",
        "platform_run_id": PRID,
        "health_state": "GREEN",
        "reasons": [],
        "generated_at_utc": TS,
        **change,
    }
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(json.dumps(data), type=HealthReport)


def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "last_health.json"
    write_json_atomic(path, {"n": 1})
    write_json_atomic(path, {"n": 2})
    assert json.loads(path.read_text()) == {"n": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last_health.json"]


def test_target_is_untouched_until_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.json"
    write_json_atomic(path, {"v": "old"})
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: Path) -> None:
        # At the moment of the swap: the target is still the complete old file, and the new content
        # is complete (and was fsynced) in a sibling temp file.
        assert json.loads(Path(dst).read_text()) == {"v": "old"}
        assert Path(src).parent == path.parent
        assert json.loads(Path(src).read_text()) == {"v": "new"}
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr("fraudrt.contracts._health.os.fsync", fsync)
    monkeypatch.setattr("fraudrt.contracts._health.os.replace", replace)
    write_json_atomic(path, {"v": "new"})
    assert events == ["fsync", "replace", "fsync"]
    assert json.loads(path.read_text()) == {"v": "new"}


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.json"
    write_json_atomic(path, {"v": "old"})

    def broken_replace(src: str, dst: Path) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr("fraudrt.contracts._health.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_json_atomic(path, {"v": "new"})
    assert json.loads(path.read_text()) == {"v": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["last.json"]


def test_unencodable_object_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "last.json"
    with pytest.raises(TypeError):
        write_json_atomic(path, {"v": object()})
    assert list(tmp_path.iterdir()) == []


def test_concurrent_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "last_metrics.json"
    # Large, differently sized documents so a torn read would be likely with an in-place rewrite.
    docs = [{"i": i, "pad": "x" * (200_000 + 37 * i)} for i in range(8)]
    write_json_atomic(path, docs[0])
    stop = threading.Event()
    failures: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            raw = path.read_bytes()
            try:
                doc = json.loads(raw)
            except ValueError:
                failures.append(f"torn read of {len(raw)} bytes")
                return
            if doc["pad"] != "x" * (200_000 + 37 * doc["i"]):
                failures.append(f"mixed content for doc {doc['i']}")
                return
            reads += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for n in range(120):
            write_json_atomic(path, docs[n % len(docs)])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert failures == []
    assert reads > 0
    assert [p.name for p in tmp_path.iterdir()] == ["last_metrics.json"]
