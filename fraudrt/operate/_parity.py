"""`fraudrt parity`: the seed's run process, step by step, through the operator's own commands.

Every step runs the same `fraudrt ...` command an operator would type (docs/runbook.md), so the
closeout proves the commands, not a private code path. A step whose command does not exist yet is
reported as MISSING, never skipped silently, and the closeout then exits non-zero.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec

from fraudrt.config import Settings, load_settings
from fraudrt.runtime.packs import active_run_id, list_manifests, run_dir

from ._evidence import bus_events_by_type, count_objects, in_scope_streams

PASS, FAIL, MISSING = "PASS", "FAIL", "MISSING"


class ParityRequest(msgspec.Struct, frozen=True, kw_only=True):
    events_per_output: int = 200
    flows: int = 2000
    seed: int = 42
    scenario_id: str = "baseline_v1"
    mode: str = "fraud"
    clean: bool = True
    keep_running: bool = False
    wait_seconds: float = 300.0


@dataclass
class StepResult:
    step: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ParityReport:
    platform_run_id: str | None = None
    steps: list[StepResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.status == PASS for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"platform_run_id": self.platform_run_id, "passed": self.passed,
                "steps": [s.__dict__ for s in self.steps]}


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fraudrt", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


_NOT_BUILT = re.compile(r"(\w+): (?:module \S+ does not exist yet|\S+ has no \w+)")


def _not_built(text: str) -> str:
    return "components not built yet: " + ", ".join(sorted(set(_NOT_BUILT.findall(text))))


def _missing_command(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode == 2 and "No such command" in proc.stderr


class _Closeout:
    def __init__(self, req: ParityRequest, progress: Callable[[str], None]) -> None:
        self.req = req
        self.report = ParityReport()
        self.progress = progress
        self.env = dict(os.environ, WSP_MAX_EVENTS_PER_OUTPUT=str(req.events_per_output))

    def step(self, name: str, *args: str, timeout: float = 900.0) -> subprocess.CompletedProcess[str] | None:
        started = time.monotonic()
        self.progress(f"[{name}] fraudrt {' '.join(args)}")
        proc = _cli(*args, env=self.env, timeout=timeout)
        took = time.monotonic() - started
        if _missing_command(proc):
            self.record(name, MISSING, f"`fraudrt {' '.join(args)}` does not exist yet", took)
            return None
        if proc.returncode != 0 and "not built yet" in (proc.stderr + proc.stdout):
            self.record(name, MISSING, _not_built(proc.stderr + proc.stdout), took)
            return None
        if proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-6:]
            self.record(name, FAIL, f"exit {proc.returncode}: " + " | ".join(tail), took)
            return None
        self.record(name, PASS, (proc.stdout.strip().splitlines() or [""])[-1][:300], took)
        return proc

    def record(self, name: str, status: str, detail: str, seconds: float = 0.0) -> None:
        self.report.steps.append(StepResult(name, status, detail, round(seconds, 2)))
        self.progress(f"    {status}: {detail}")

    def check(self, name: str, fn: Callable[[], tuple[str, str]]) -> None:
        status, detail = fn()
        self.record(name, status, detail)


def _health_state(path: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    except (OSError, ValueError):
        return None


def _evidence_checks(c: _Closeout, settings: Settings, run_id: str) -> None:
    """Seed step 11.1: required evidence and pass conditions."""
    root = run_dir(settings, run_id)

    def exists(rel: str) -> Callable[[], tuple[str, str]]:
        def fn() -> tuple[str, str]:
            path = root / rel
            return (PASS, str(path)) if path.is_file() else (MISSING, f"{path} not produced")
        return fn

    def health_green(component: str, extra: Callable[[dict[str, Any]], str | None] | None = None,
                     ) -> Callable[[], tuple[str, str]]:
        def fn() -> tuple[str, str]:
            report = _health_state(root / component / "health" / "last_health.json")
            if report is None:
                return MISSING, f"{component} health not produced (component not built or not run)"
            if report.get("health_state") != "GREEN":
                return FAIL, f"{component} health_state={report.get('health_state')} {report.get('reasons')}"
            problem = extra(report) if extra else None
            return (FAIL, problem) if problem else (PASS, f"{component} GREEN")
        return fn

    def conformance() -> tuple[str, str]:
        report = _health_state(root / "obs" / "environment_conformance.json")
        if report is None:
            return MISSING, "obs/environment_conformance.json not produced"
        status = report.get("status")
        return (PASS, "conformance PASS") if status == "PASS" else (FAIL, f"conformance status={status}")

    def dla_lineage(report: dict[str, Any]) -> str | None:
        unresolved = report.get("details", {}).get("lineage_unresolved_total")
        return None if unresolved == 0 else f"lineage_unresolved_total={unresolved}"

    def al_parity(report: dict[str, Any]) -> str | None:
        details = report.get("details", {})
        intake, outcomes = details.get("intake_total"), details.get("outcome_total")
        if intake is None or intake != outcomes or not intake:
            return f"intake/outcome parity not shown (intake={intake}, outcomes={outcomes})"
        return None

    def wsp_emitted() -> tuple[str, str]:
        log = root / "operate" / "local_parity_control_ingress_v0" / "logs" / "wsp_ready_consumer.log"
        if not log.is_file():
            return MISSING, f"{log} not produced"
        want = f"emitted={c.req.events_per_output}"
        lines = [line for line in log.read_text().splitlines() if want in line]
        return (PASS, f"{len(lines)} output(s) reached {want}") if lines else (FAIL, f"no output reached {want}")

    c.check("11.1 platform_run_report.json", exists("obs/platform_run_report.json"))
    c.check("11.1 environment_conformance PASS", conformance)
    c.check("11.1 DF GREEN", health_green("decision_fabric"))
    c.check("11.1 AL GREEN + intake/outcome parity", health_green("action_layer", al_parity))
    c.check("11.1 DLA GREEN + lineage_unresolved_total=0", health_green("decision_log_audit", dla_lineage))
    c.check("11.1 WSP emitted per output", wsp_emitted)


def _ingress_checks(c: _Closeout, settings: Settings, run_id: str) -> None:
    """Seed step 7: exactly N admitted events per in-scope output on Kinesis, each with a receipt."""
    want = c.req.events_per_output
    by_type = anyio.run(bus_events_by_type, settings, in_scope_streams(settings, c.req.mode), run_id)
    if not by_type:
        c.record("7 admitted events on Kinesis", FAIL, "no event of this run on the traffic/context streams")
        return
    off = {t: v for t, v in by_type.items() if v["distinct"] != want}
    detail = ", ".join(f"{t}={v['distinct']}" for t, v in sorted(by_type.items()))
    c.record("7 admitted events on Kinesis", FAIL if off or len(by_type) < 4 else PASS,
             f"distinct events per output (want {want} for 4 outputs): {detail}")
    admitted = sum(v["distinct"] for v in by_type.values())
    receipts = anyio.run(count_objects, settings, settings.buckets.platform, f"{run_id}/ig/receipts/")
    layout = settings.ig.receipts_layout
    ok = receipts >= admitted if layout == "per_event" else receipts > 0
    c.record("7 IG receipts in the object store", PASS if ok else FAIL,
             f"{receipts} receipt object(s) ({layout}) for {admitted} admitted events")


def run_parity(req: ParityRequest, progress: Callable[[str], None] = print) -> ParityReport:
    c = _Closeout(req, progress)
    if req.clean:
        # A clean state: stop anything left from a previous closeout before minting a new run.
        for manifest in reversed(list_manifests()):
            _cli("pack", "down", manifest.short_name, env=c.env)
    if not c.step("0 substrate up", "substrate", "up"):
        return c.report
    if not c.step("0 substrate bootstrap", "substrate", "bootstrap"):
        return c.report
    c.step("0 substrate status", "substrate", "status")
    if not c.step("2 run new", "run", "new"):
        return c.report
    settings = load_settings()
    run_id = active_run_id(settings)
    c.report.platform_run_id = run_id
    for manifest in list_manifests():
        c.step(f"3 pack up {manifest.short_name}", "pack", "up", manifest.short_name)
    worlds = settings.home + f"/worlds/parity-seed{req.seed}"
    gen = c.step("4.0 engine generate", "engine", "generate", "--out", worlds, "--seed", str(req.seed),
                 "--flows", str(req.flows), "--scenario-id", req.scenario_id, "--overwrite", "--json")
    if gen:
        summary = json.loads(gen.stdout)
        engine_root = f"s3://{settings.buckets.oracle}/parity/{summary['run_id']}"
        c.env.update(ORACLE_SYNC_SOURCE=summary["engine_run_root"], ORACLE_ENGINE_RUN_ROOT=engine_root,
                     ORACLE_SCENARIO_ID=req.scenario_id)
        c.step("4.1 oracle sync", "oracle", "sync")
        c.step("4.2 oracle pack", "oracle", "pack")
        c.step("4.2 oracle check --strict", "oracle", "check", "--strict")
        c.step("4.3 oracle stream-sort", "oracle", "stream-sort")
        c.env.setdefault("SR_RUN_EQUIVALENCE_KEY", f"parity_{run_id}")
        c.step("5 sr ready --reuse", "sr", "ready", "--reuse")
    # Steps 6-10 run inside the packs: wait for their evidence, or the deadline. Without the obs_gov
    # pack no conformance file will ever come, so then the end of WSP's stream is what is awaited.
    deadline = time.monotonic() + req.wait_seconds
    ready_published = any(s.status == PASS for s in c.report.steps if s.step.startswith("5 "))
    obs_gov_up = any(s.status == PASS for s in c.report.steps if s.step == "3 pack up obs_gov")
    done = (run_dir(settings, run_id) / "obs" / "environment_conformance.json") if obs_gov_up else (
        run_dir(settings, run_id) / "operate" / "local_parity_control_ingress_v0" / "logs" / "wsp_ready_consumer.log")
    while ready_published and time.monotonic() < deadline:
        text = done.read_text() if done.is_file() else ""
        if done.is_file() and (obs_gov_up or "status=STREAMED" in text or "status=FAILED" in text):
            break
        time.sleep(1.0)
    c.step("3 pack status all", "pack", "status", "all")
    _ingress_checks(c, settings, run_id)
    _evidence_checks(c, settings, run_id)
    if not req.keep_running:
        for manifest in reversed(list_manifests()):
            _cli("pack", "down", manifest.short_name, env=c.env)
    return c.report
