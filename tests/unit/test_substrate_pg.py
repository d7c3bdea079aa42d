"""The embedded launcher passes over PostgreSQL servers too old for the runtime's SQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fraudrt.substrate import _services
from fraudrt.substrate._services import MIN_PG_MAJOR, _pg_major, find_pg_bindir


def _fake_bindir(root: Path, version: str) -> Path:
    bindir = root / "bin"
    bindir.mkdir(parents=True)
    for name in ("postgres", "initdb"):
        script = bindir / name
        script.write_text(f"#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n")
        script.chmod(0o755)
    pg_config = root / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho {bindir}\n")
    pg_config.chmod(0o755)
    return bindir


def test_the_server_version_is_read_from_its_binary(tmp_path: Path) -> None:
    assert _pg_major(_fake_bindir(tmp_path / "a", "15.8 (Debian 15.8-0+deb12u1)")) == 15
    assert _pg_major(_fake_bindir(tmp_path / "b", "9.6.24")) == 9
    assert _pg_major(tmp_path / "nowhere") == 0


def test_a_server_older_than_the_minimum_is_passed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _fake_bindir(tmp_path / "old", f"{MIN_PG_MAJOR - 1}.4")
    new = _fake_bindir(tmp_path / "new", f"{MIN_PG_MAJOR}.1")
    monkeypatch.setenv("PATH", f"{old.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(_services.glob, "glob", lambda pattern: [str(new)])
    assert find_pg_bindir() == new
