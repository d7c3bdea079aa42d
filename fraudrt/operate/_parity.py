"""`fraudrt parity`: the seed's run process, steps 0-12, through the operator's own commands.

Every step runs the same `fraudrt ...` command an operator would type (docs/runbook.md), so the
closeout proves the commands, not a private code path. A step whose command or component does not
exist yet is MISSING (with what is missing), never skipped silently; every check reads the evidence
file the seed names and says where it is. The closeout passes only if every step passes; no
threshold is loosened here: a health file is GREEN or it is not.
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
from typing import Any, Final

import anyio
import msgspec

from fraudrt.config import Settings, load_settings
from fraudrt.contracts import read_json
from fraudrt.runtime.packs import active_run_id, list_manifests, pack_run_dir, run_dir

from ._evidence import bus_events_by_type, count_objects, in_scope_streams

PASS, FAIL, MISSING = "PASS", "FAIL", "MISSING"
# The seed's order: always-on packs up (step 3) ingress first; down (step 12) obs_gov first.
PACK_ORDER: Final = ("control_ingress", "rtdl_core", "rtdl_decision_lane", "case_labels", "obs_gov")
WSP_LOG: Final = "operate/local_parity_control_ingress_v0/logs/wsp_ready_consumer.log"


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
    evidence: str = ""


@dataclass
class ParityReport:
    platform_run_id: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.status == PASS for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"platform_run_id": self.platform_run_id, "passed": self.passed, "seconds": round(self.seconds, 1),
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

    def step(self, name: str, *args: str, timeout: float = 900.0, evidence: str = "",
             ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str] | None:
        started = time.monotonic()
        self.progress(f"[{name}] fraudrt {' '.join(args)}")
        proc = _cli(*args, env=self.env, timeout=timeout)
        took = time.monotonic() - started
        if _missing_command(proc):
            self.record(name, MISSING, f"`fraudrt {' '.join(args)}` does not exist yet", took, evidence)
            return None
        if proc.returncode not in ok_codes and "not built yet" in (proc.stderr + proc.stdout):
            self.record(name, MISSING, _not_built(proc.stderr + proc.stdout), took, evidence)
            return None
        if proc.returncode not in ok_codes:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-6:]
            self.record(name, FAIL, f"exit {proc.returncode}: " + " | ".join(tail), took, evidence)
            return None
        self.record(name, PASS, (proc.stdout.strip().splitlines() or [""])[-1][:300], took, evidence)
        return proc

    def record(self, name: str, status: str, detail: str, seconds: float = 0.0, evidence: str = "") -> None:
        self.report.steps.append(StepResult(name, status, detail, round(seconds, 2), evidence))
        self.progress(f"    {status}: {detail}")

    def check(self, name: str, fn: Callable[[], tuple[str, str, str]]) -> None:
        status, detail, evidence = fn()
        self.record(name, status, detail, evidence=evidence)

    def passed(self, prefix: str) -> bool:
        return any(s.status == PASS for s in self.report.steps if s.step.startswith(prefix))


# ------------------------------------------------------------------------------ evidence checks

Check = Callable[[], tuple[str, str, str]]


class _Evidence:
    """Checks over the run's evidence files, each returning (status, detail, path)."""

    def __init__(self, settings: Settings, run_id: str, req: ParityRequest) -> None:
        self.root = run_dir(settings, run_id)
        self.settings = settings
        self.run_id = run_id
        self.req = req

    def exists(self, rel: str) -> Check:
        def fn() -> tuple[str, str, str]:
            path = self.root / rel
            return (PASS, "exists", str(path)) if path.is_file() else (MISSING, "not produced", str(path))
        return fn

    def green(self, component: str, extra: Callable[[dict[str, Any], dict[str, Any]], str | None] | None = None,
              ) -> Check:
        def fn() -> tuple[str, str, str]:
            path = self.root / component / "health" / "last_health.json"
            health = read_json(path)
            if health is None:
                return MISSING, f"{component} health not produced (component not built or not run)", str(path)
            if health.get("health_state") != "GREEN":
                return FAIL, f"{component} health_state={health.get('health_state')} {health.get('reasons')}", str(path)
            metrics = read_json(self.root / component / "metrics" / "last_metrics.json") or {}
            problem = extra(health, metrics) if extra else None
            return (FAIL, problem, str(path)) if problem else (PASS, f"{component} GREEN", str(path))
        return fn

    @staticmethod
    def counter_above_zero(*names: str) -> Callable[[dict[str, Any], dict[str, Any]], str | None]:
        def fn(health: dict[str, Any], metrics: dict[str, Any]) -> str | None:
            values = {**(metrics.get("counters") or {}), **(health.get("details") or {})}
            found = [(n, values[n]) for n in names if n in values]
            if not found:
                return f"none of {', '.join(names)} in its metrics"
            name, value = found[0]
            return None if value and value > 0 else f"{name}={value}"
        return fn

    @staticmethod
    def csfb_joined(_health: dict[str, Any], metrics: dict[str, Any]) -> str | None:
        """Bindings joined to their context, at once or late; none still waiting."""
        c = metrics.get("counters") or {}
        joined = int(c.get("join_hits", 0)) + int(c.get("late_joins", 0))
        if not joined or c.get("join_misses"):
            return (f"join_hits={c.get('join_hits')} late_joins={c.get('late_joins')} "
                    f"join_misses={c.get('join_misses')} of bindings_total={c.get('bindings_total')}")
        return None

    @staticmethod
    def dla_lineage(health: dict[str, Any], _metrics: dict[str, Any]) -> str | None:
        unresolved = (health.get("details") or {}).get("lineage_unresolved_total")
        return None if unresolved == 0 else f"lineage_unresolved_total={unresolved}"

    @staticmethod
    def al_parity(health: dict[str, Any], _metrics: dict[str, Any]) -> str | None:
        details = health.get("details") or {}
        intake, outcomes = details.get("intake_total"), details.get("outcome_total")
        if intake is None or intake != outcomes or not intake:
            return f"intake/outcome parity not shown (intake={intake}, outcomes={outcomes})"
        return None

    def conformance(self) -> tuple[str, str, str]:
        path = self.root / "obs" / "environment_conformance.json"
        report = read_json(path)
        if report is None:
            return MISSING, "not produced", str(path)
        if report.get("status") == "PASS":
            return PASS, "conformance PASS", str(path)
        failing = [f"{c['check_id']}: {'; '.join(c.get('reasons', [])[:2])}" for c in report.get("checks", [])
                   if c.get("status") != "PASS"]
        return FAIL, f"status={report.get('status')}: " + " | ".join(failing)[:600], str(path)

    def wsp_emitted(self) -> tuple[str, str, str]:
        log = self.root / WSP_LOG
        if not log.is_file():
            return MISSING, "not produced", str(log)
        text = log.read_text()
        outputs = set(re.findall(rf"output_id=(\S+) emitted={self.req.events_per_output}\b", text))
        want = 4  # traffic + arrival events + arrival entities + flow anchor of the mode
        status = PASS if len(outputs) >= want else FAIL
        return status, f"{len(outputs)} of {want} outputs reached emitted={self.req.events_per_output}", str(log)

    def report_completed(self) -> tuple[str, str, str]:
        path = self.root / "obs" / "platform_run_report.json"
        report = read_json(path)
        if report is None:
            return MISSING, "not produced", str(path)
        done = report.get("run_completed") or {}
        if done.get("run_completed"):
            return PASS, f"decisions={report['rtdl']['decisions']} all accounted for", str(path)
        return FAIL, "; ".join(done.get("reasons", []))[:600], str(path)

    def governance(self) -> tuple[str, str, str]:
        from fraudrt.obs_gov import governance as gov
        from fraudrt.substrate import s3_client

        uri = f"s3://{self.settings.buckets.platform}/{gov.projection_key(self.run_id)}"

        async def read() -> list[str]:
            async with s3_client(self.settings.s3) as s3:
                # Events recorded since the last compaction (e.g. by `fraudrt report` just now) too.
                await gov.GovernanceView(self.settings, self.run_id).compact(s3)
                return [e.event_family for e in await gov.read_projection(self.settings, self.run_id, s3)]

        families = anyio.run(read)
        if not families:
            return MISSING, "no governance event", uri
        if "RUN_REPORT_GENERATED" not in families:
            return FAIL, f"{len(families)} events, none RUN_REPORT_GENERATED", uri
        return PASS, f"{len(families)} events ({', '.join(sorted(set(families)))})", uri


def _ingress_checks(c: _Closeout, settings: Settings, run_id: str) -> None:
    """Seed step 7: exactly N admitted events per in-scope output on Kinesis, each with a receipt."""
    want = c.req.events_per_output
    by_type = anyio.run(bus_events_by_type, settings, in_scope_streams(settings, c.req.mode), run_id)
    streams = ", ".join(in_scope_streams(settings, c.req.mode))
    if not by_type:
        c.record("7 admitted events on Kinesis", FAIL, "no event of this run on the traffic/context streams",
                 evidence=streams)
        return
    off = {t: v for t, v in by_type.items() if v["distinct"] != want}
    detail = ", ".join(f"{t}={v['distinct']}" for t, v in sorted(by_type.items()))
    c.record("7 admitted events on Kinesis", FAIL if off or len(by_type) < 4 else PASS,
             f"distinct events per output (want {want} for 4 outputs): {detail}", evidence=streams)
    admitted = sum(v["distinct"] for v in by_type.values())
    receipts = anyio.run(count_objects, settings, settings.buckets.platform, f"{run_id}/ig/receipts/")
    layout = settings.ig.receipts_layout
    ok = receipts >= admitted if layout == "per_event" else receipts > 0
    c.record("7 IG receipts in the object store", PASS if ok else FAIL,
             f"{receipts} receipt object(s) ({layout}) for {admitted} admitted events",
             evidence=f"s3://{settings.buckets.platform}/{run_id}/ig/receipts/")


def _wait_for_the_run(c: _Closeout, settings: Settings, run_id: str) -> None:
    """Steps 6-10 run inside the packs: wait for WSP's end of stream, then (when the decision lane
    and obs_gov run) for the report to say every expected event is accounted for, or the deadline."""
    deadline = time.monotonic() + c.req.wait_seconds
    root = run_dir(settings, run_id)
    log = root / WSP_LOG
    started = time.monotonic()
    while time.monotonic() < deadline:
        text = log.read_text() if log.is_file() else ""
        if "status=STREAMED" in text or "status=FAILED" in text:
            break
        time.sleep(0.5)
    streamed = "status=STREAMED" in (log.read_text() if log.is_file() else "")
    c.record("6 WSP stream finished", PASS if streamed else FAIL,
             "WSP stream stop status=STREAMED" if streamed else "no STREAMED stop in the WSP log before the deadline",
             time.monotonic() - started, str(log))
    if not (c.passed("3 pack up rtdl_decision_lane") and c.passed("3 pack up obs_gov")):
        return
    report = root / "obs" / "platform_run_report.json"
    while time.monotonic() < deadline:
        doc = read_json(report) or {}
        if (doc.get("run_completed") or {}).get("run_completed"):
            return
        time.sleep(1.0)


def _case_stream_check(c: _Closeout, settings: Settings, run_id: str) -> None:
    """Seed step 10: fp.bus.case.v1 carries the run's case triggers (and label assertions)."""
    stream = settings.streams.name("case")
    by_type = anyio.run(bus_events_by_type, settings, [stream], run_id)
    triggers = by_type.get("case_trigger", {}).get("distinct", 0)
    c.record("10 case triggers on fp.bus.case.v1", PASS if triggers else FAIL,
             f"{triggers} case_trigger and {by_type.get('label_assertion', {}).get('distinct', 0)} "
             "label_assertion event(s) of the run", evidence=stream)


def _evidence_checks(c: _Closeout, e: _Evidence) -> None:
    # Step 8: the RTDL core projected the run (CSFB's join evidence: bindings joined).
    c.check("8 archive_writer GREEN + archived", e.green("archive_writer", e.counter_above_zero("handled_total")))
    c.check("8 IEG GREEN", e.green("identity_entity_graph"))
    c.check("8 OFP GREEN", e.green("online_feature_plane"))
    c.check("8 CSFB GREEN + join evidence", e.green("context_store_flow_binding", e.csfb_joined))
    # Step 9: the decision lane.
    c.check("9 DL GREEN", e.green("degrade_ladder"))
    c.check("9 run report: every expected event accounted for", e.report_completed)
    # Step 10: case + labels.
    c.check("10 CaseTrigger GREEN + triggers_seen > 0",
            e.green("case_trigger", e.counter_above_zero("triggers_seen", "triggers_seen_total")))
    c.check("10 CM GREEN + cases_created > 0",
            e.green("case_mgmt", e.counter_above_zero("cases_created", "cases_created_total")))
    c.check("10 LS GREEN + accepted > 0",
            e.green("label_store", e.counter_above_zero("accepted", "accepted_total", "labels_accepted_total")))
    # Step 11.1: the seed's required evidence and pass conditions.
    c.check("11.1 platform_run_report.json", e.exists("obs/platform_run_report.json"))
    c.check("11.1 environment_conformance PASS", e.conformance)
    c.check("11.1 DF GREEN", e.green("decision_fabric"))
    c.check("11.1 AL GREEN + intake/outcome parity", e.green("action_layer", e.al_parity))
    c.check("11.1 DLA GREEN + lineage_unresolved_total=0", e.green("decision_log_audit", e.dla_lineage))
    c.check("11.1 WSP emitted per output", e.wsp_emitted)
    c.check("11 governance events.jsonl", e.governance)


def run_parity(req: ParityRequest, progress: Callable[[str], None] = print) -> ParityReport:
    began = time.monotonic()
    c = _Closeout(req, progress)
    try:
        _run(c, req)
    finally:
        c.report.seconds = time.monotonic() - began
    return c.report


def _run(c: _Closeout, req: ParityRequest) -> None:
    settings = load_settings()
    packs = [m.short_name for m in list_manifests()]
    order = [p for p in PACK_ORDER if p in packs] + [p for p in packs if p not in PACK_ORDER]
    if req.clean:
        # A clean state: stop anything left from a previous closeout before minting a new run.
        for name in reversed(order):
            _cli("pack", "down", name, env=c.env)
    # Only the embedded substrate is started by fraudrt; compose and aws are up already (step 0's make targets).
    if settings.substrate == "embedded" and not c.step("0 substrate up", "substrate", "up"):
        return
    if not c.step("0 substrate bootstrap", "substrate", "bootstrap"):
        return
    c.step("0 substrate status", "substrate", "status")
    settings = load_settings()  # again: `substrate up` has just written the embedded endpoints
    wiring = [k for k, v in (("s3 endpoint", settings.s3.endpoint_url), ("kinesis endpoint",
                                                                          settings.kinesis.endpoint_url),
                             ("postgres dsn", settings.postgres.dsn)) if not v and settings.substrate != "none"]
    c.record("1 env wiring", FAIL if wiring else PASS,
             f"unset: {', '.join(wiring)}" if wiring else f"profile {settings.profile}: endpoints and DSN set")
    if not c.step("2 run new", "run", "new"):
        return
    settings = load_settings()
    run_id = active_run_id(settings)
    c.report.platform_run_id = run_id
    for name in order:
        c.step(f"3 pack up {name}", "pack", "up", name,
               evidence=str(pack_run_dir(settings, run_id, f"local_parity_{name}_v0") / "logs"))
    worlds = settings.home + f"/worlds/parity-seed{req.seed}"
    gen = c.step("4.0 engine generate", "engine", "generate", "--out", worlds, "--seed", str(req.seed),
                 "--flows", str(req.flows), "--scenario-id", req.scenario_id, "--overwrite", "--json")
    if gen:
        summary = json.loads(gen.stdout)
        engine_root = f"s3://{settings.buckets.oracle}/parity/{summary['run_id']}"
        c.env.update(ORACLE_SYNC_SOURCE=summary["engine_run_root"], ORACLE_ENGINE_RUN_ROOT=engine_root,
                     ORACLE_SCENARIO_ID=req.scenario_id)
        c.step("4.1 oracle sync", "oracle", "sync", evidence=engine_root)
        c.step("4.2 oracle pack", "oracle", "pack", evidence=engine_root)
        c.step("4.2 oracle check --strict", "oracle", "check", "--strict", evidence=engine_root)
        c.step("4.3 oracle stream-sort", "oracle", "stream-sort", evidence=f"{engine_root}/stream_view/ts_utc/")
        c.env.setdefault("SR_RUN_EQUIVALENCE_KEY", f"parity_{run_id}")
        c.step("5 sr ready --reuse", "sr", "ready", "--reuse",
               evidence=f"s3://{settings.buckets.platform}/{run_id}/sr/")
    if c.passed("5 "):
        _wait_for_the_run(c, settings, run_id)
    c.step("3 pack status all", "pack", "status", "all")
    _ingress_checks(c, settings, run_id)
    _case_stream_check(c, settings, run_id)
    obs = run_dir(settings, run_id) / "obs"
    c.step("11 fraudrt report", "report", evidence=str(obs / "platform_run_report.json"))
    c.step("11 fraudrt governance query --limit 20", "governance", "query", "--limit", "20",
           evidence=f"s3://{settings.buckets.platform}/{run_id}/obs/governance/")
    c.step("11 fraudrt conformance", "conformance", evidence=str(obs / "environment_conformance.json"))
    _evidence_checks(c, _Evidence(settings, run_id, req))
    if not req.keep_running:
        for name in reversed(order):
            c.step(f"12 pack down {name}", "pack", "down", name)
