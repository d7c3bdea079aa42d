"""`environment_conformance` (obs_gov pack) and `fraudrt conformance`: live checks, written atomically
to `runs/fraud-platform/<run>/obs/environment_conformance.json`; each change of the outcome is a
`CONFORMANCE_RESULT` governance event."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import anyio

from fraudrt.config import Settings
from fraudrt.contracts import sha256_hex, write_json_atomic
from fraudrt.runtime import ComponentContext, Service, classify
from fraudrt.runtime.packs import run_dir

from ._conformance import Conformance, ConformanceReport
from .governance import record

COMPONENT = "environment_conformance"


def conformance_path(settings: Settings, platform_run_id: str) -> Path:
    return run_dir(settings, platform_run_id) / "obs" / "environment_conformance.json"


def outcome_key(report: ConformanceReport) -> str:
    """What a governance event records once: the status and which checks failed (not their ages)."""
    failing = sorted(c.check_id for c in report.checks if c.status != "PASS")
    return f"conformance:{report.status}:{sha256_hex(','.join(failing))[:16]}"


async def publish(settings: Settings, checker: Conformance, report: ConformanceReport) -> Path:
    path = conformance_path(settings, checker.run)
    await anyio.to_thread.run_sync(write_json_atomic, path, report)
    await record(settings, checker.run, "CONFORMANCE_RESULT", source_component=COMPONENT,
                 dedupe_key=outcome_key(report),
                 details={"status": report.status, "artifact": str(path),
                          "failing": {c.check_id: c.reasons[:5] for c in report.checks if c.status != "PASS"}})
    return path


async def run_conformance(settings: Settings, platform_run_id: str) -> tuple[ConformanceReport, Path]:
    """One round (the CLI's one-shot): check, write the file, record the outcome."""
    checker = Conformance(settings, platform_run_id)
    report = await checker.run_checks()
    return report, await publish(settings, checker, report)


class EnvironmentConformance(Service):
    name: ClassVar[str] = COMPONENT

    def __init__(self) -> None:
        self._ready = asyncio.Event()
        self.ready = self._ready
        self.rounds = 0
        self.failures = 0
        self.last: ConformanceReport | None = None
        self.last_error: str | None = None

    async def run(self, ctx: ComponentContext) -> None:
        interval = float(ctx.options.get("interval_seconds", 10.0))
        checker = Conformance(ctx.settings, ctx.platform_run_id)
        self._ready.set()
        while not ctx.stopping.is_set():
            try:
                report = await checker.run_checks()
                await publish(ctx.settings, checker, report)
                self.last, self.last_error = report, None
                self.rounds += 1
            except Exception as exc:
                # Writing the file or the event failed (disk, object store): wait it out, say so.
                if not classify(exc).transient:
                    raise
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                ctx.logger.warning("conformance round failed: %s", self.last_error)
            with anyio.move_on_after(interval):
                await ctx.stopping.wait()

    def health(self) -> tuple[str, list[str]]:
        reasons = []
        if self.last_error:
            reasons.append(f"CONFORMANCE_NOT_WRITTEN: {self.last_error}")
        if self.last is not None and self.last.status != "PASS":
            failing = [c.check_id for c in self.last.checks if c.status != "PASS"]
            reasons.append(f"CONFORMANCE_FAIL: {', '.join(failing)}")
        return ("AMBER" if reasons else "GREEN"), reasons

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rounds_total": self.rounds, "round_failures_total": self.failures}
        if self.last is not None:
            out["status"] = self.last.status
            out["failing_checks"] = ",".join(c.check_id for c in self.last.checks if c.status != "PASS")
        return out
