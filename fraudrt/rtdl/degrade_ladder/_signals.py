"""The ladder's signals: what each watched projector reports about itself, and the bundles' availability.

A projector's pack writes its `health/last_health.json` and `metrics/last_metrics.json` every 2 s
(DESIGN §2): the health already folds in its runner (Postgres and S3 failures: `DEPENDENCY_DOWN`),
its shard readers (Kinesis failures) and the pack's outbox relay; the metrics carry the runtime's
consumer lag per stream (`lag_ms.<stream>`: how long the oldest record waiting for it has been on the
bus; 0 when it is caught up, so an idle stream reads as no lag). A projector is *at fault* when its
report is missing (after the start-up grace), unreadable or stale (its pack is not running), its
health is RED, a dependency is down, or its lag reaches the policy's limit; the fault calls for the
posture the policy names for that projector. AMBER alone (a dead letter, a slow join) is not a fault:
it does not stop the projector from serving DF.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from fraudrt.contracts import HealthReport, MetricsReport, health_path, metrics_path, parse_ts_utc
from fraudrt.rtdl.identity_entity_graph import DEFINITION_DIGEST as IEG_DEFINITION_DIGEST
from fraudrt.rtdl.online_feature_plane import load_definitions
from fraudrt.rtdl.policy import BundleError, DecisionPolicy, LadderSpec, SignalSpec, load_bundle

from ._ladder import Verdict

_health_decoder = msgspec.json.Decoder(HealthReport)
_metrics_decoder = msgspec.json.Decoder(MetricsReport)


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """A projector's two report files as read now (None: absent; `error`: unreadable)."""

    health: HealthReport | None = None
    metrics: MetricsReport | None = None
    error: str | None = None


def read_report(runs_root: Path, platform_run_id: str, component: str) -> Report:
    try:
        health_bytes = health_path(runs_root, platform_run_id, component).read_bytes()
    except FileNotFoundError:
        return Report()
    except OSError as exc:
        return Report(error=f"{type(exc).__name__}: {exc}")
    try:
        health = _health_decoder.decode(health_bytes)
        try:
            metrics = _metrics_decoder.decode(metrics_path(runs_root, platform_run_id, component).read_bytes())
        except FileNotFoundError:
            metrics = None
    except (msgspec.DecodeError, msgspec.ValidationError, OSError) as exc:
        return Report(error=f"{type(exc).__name__}: {exc}")
    return Report(health=health, metrics=metrics)


def max_lag(metrics: MetricsReport | None) -> tuple[float, str | None]:
    """The largest `lag_ms.<stream>` gauge and its stream (0, None without any)."""
    worst, where = 0.0, None
    for key, value in (metrics.gauges if metrics else {}).items():
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if key.startswith("lag_ms.") and numeric and float(value) > worst:  # type: ignore[arg-type]
            worst, where = float(value), key.removeprefix("lag_ms.")  # type: ignore[arg-type]
    return worst, where


def projector_verdict(spec: SignalSpec, report: Report, *, now: float, since_start: float,
                      ladder: LadderSpec) -> Verdict:
    """What one projector's report calls for (pure: the time is given)."""
    name, fault = spec.component, spec.on_fault
    if report.error is not None:
        return Verdict(name, fault, f"REPORT_UNREADABLE: {report.error}"[:300])
    health = report.health
    if health is None:
        if since_start < ladder.startup_grace_seconds:
            return Verdict(name, "NORMAL")
        return Verdict(name, fault, "NO_REPORT: the projector has written no health report for this run")
    age = now - parse_ts_utc(health.generated_at_utc).timestamp()
    if age > ladder.report_stale_seconds:
        return Verdict(name, fault, f"REPORT_STALE: last report {age:.0f}s ago (its pack is not running)", age)
    if str(health.health_state) == "RED":
        return Verdict(name, fault, "HEALTH_RED: " + "; ".join(health.reasons[:3]))
    down = [r for r in health.reasons if r.startswith("DEPENDENCY_DOWN")]
    if down:
        return Verdict(name, fault, down[0])
    lag, stream = max_lag(report.metrics)
    if lag >= spec.lag_ms:
        return Verdict(name, fault, f"LAG: {lag:.0f}ms behind the bus on {stream} (limit {spec.lag_ms:.0f}ms)", lag)
    return Verdict(name, "NORMAL", value=lag)


class BundleCheck:
    """Whether the policy's bundles load, are canonical and match the projectors' feature definitions.

    Re-checked only when a file's size or mtime changes (a tick reads two stats, not two bundles)."""

    def __init__(self, policy: DecisionPolicy, velocity_digest: Callable[[], str] | None = None) -> None:
        self.policy = policy
        self._velocity_digest = velocity_digest or (lambda: load_definitions().digest)
        self._seen: tuple[Any, ...] | None = None
        self._verdicts: list[Verdict] = []

    def _stamp(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for which in ("model", "rules_only"):
            try:
                st = os.stat(self.policy.bundle_path(which))  # type: ignore[arg-type]
                out.append((st.st_size, st.st_mtime_ns))
            except OSError as exc:
                out.append(str(exc))
        return tuple(out)

    def verdicts(self) -> list[Verdict]:
        stamp = self._stamp()
        if stamp != self._seen:
            self._verdicts = self._check()
            self._seen = stamp
        return self._verdicts

    def _check(self) -> list[Verdict]:
        found = []
        unavailable = self.policy.ladder.bundle_unavailable
        for which, mode in (("model", unavailable), ("rules_only", "FAIL_CLOSED")):
            path = self.policy.bundle_path(which)  # type: ignore[arg-type]
            try:
                loaded = load_bundle(path)
                defs = loaded.bundle.feature_definitions
                if defs.get("velocity") != self._velocity_digest():
                    raise BundleError(f"{path}: fitted on other OFP feature definitions")
                if defs.get("graph") != IEG_DEFINITION_DIGEST:
                    raise BundleError(f"{path}: fitted on another IEG feature definition")
            except BundleError as exc:
                found.append(Verdict(f"bundle.{which}", mode, f"BUNDLE_UNAVAILABLE: {exc}"[:300]))
        return found


def signal_values(verdicts: list[Verdict]) -> dict[str, Any]:
    """The numbers behind a change (recorded with it): per signal its call and value."""
    return {v.signal: {"mode": v.mode, "value": None if v.value is None or not math.isfinite(v.value)
                       else round(v.value, 3), "reason": v.reason} for v in verdicts}
