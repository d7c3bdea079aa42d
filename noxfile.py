"""nox sessions. Each runs inside the project's .venv (made by `make setup`), so `nox -s X` and
`make X` behave the same on a fresh machine."""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
BIN = ROOT / ".venv" / "bin"
nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]


def _setup(session: nox.Session) -> None:
    session.run("make", "--no-print-directory", "setup", external=True)


def _bin(name: str) -> str:
    return str(BIN / name)


@nox.session
def tests(session: nox.Session) -> None:
    """The suite on the embedded substrate (unit, integration, e2e; chaos in its short form)."""
    _setup(session)
    args = session.posargs or ["-m", "not chaos_long", "-q"]
    session.run(_bin("pytest"), *args, external=True, env={"PYTHONDONTWRITEBYTECODE": "1"})


@nox.session
def chaos(session: nox.Session) -> None:
    """The long crash/kill suite."""
    _setup(session)
    session.run(_bin("pytest"), "-m", "chaos", "-q", *session.posargs, external=True,
                env={"FRAUDRT_CHAOS_LONG": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    _setup(session)
    session.run(_bin("ruff"), "check", "fraudrt", "tests", "noxfile.py", external=True)


@nox.session
def typecheck(session: nox.Session) -> None:
    _setup(session)
    session.run(_bin("mypy"), "fraudrt", external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks on the embedded substrate; results go to docs/performance.md by hand."""
    _setup(session)
    for script in sorted((ROOT / "bench").glob("bench_*.py")):
        if session.posargs and script.stem not in session.posargs:
            continue
        session.run(_bin("python"), str(script), external=True)


@nox.session
def parity(session: nox.Session) -> None:
    """The Spine Green v0 closeout (200 events) on the embedded substrate, from a clean state."""
    _setup(session)
    env = {"WSP_MAX_EVENTS_PER_OUTPUT": os.environ.get("WSP_MAX_EVENTS_PER_OUTPUT", "200")}
    session.run(_bin("fraudrt"), "parity", *session.posargs, external=True, env=env)
