"""Gathering a run report: component files, IG's decisions, the oracle's truth, governance; then
writing the JSON and HTML (locally, atomically, and to the object store).

A source that is missing or fails is a note in the report (`basis.notes`), never a crash: the
decision lane and the case plane may not have produced anything yet. Nothing here is read per
event: component files are a few small JSON documents, IG's tables are read when IG's counters
moved, the truth once per run, the governance log through its incremental view.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import config_digest, health_path, metrics_path, read_json, utc_now_ts, write_json_atomic
from fraudrt.runtime import classify
from fraudrt.runtime.packs import list_manifests, pack_run_dir, run_dir
from fraudrt.substrate import s3_client

from . import _report as R
from ._html import render
from ._truth import Truth, load_truth
from .governance import GovernanceView, governance_prefix, projection_key, record

COMPONENT: Final = "platform_run_reporter"
# IG's tables are re-read when its counters moved, or after this long regardless (a heal can
# settle admissions without a push).
IG_REFRESH_SECONDS: Final = 60.0


def report_paths(settings: Settings, platform_run_id: str) -> tuple[Path, Path]:
    obs = run_dir(settings, platform_run_id) / "obs"
    return obs / "platform_run_report.json", obs / "platform_run_report.html"



def _read_from(path: Path, offset: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read()


def _postgres_basis(dsn: str | None) -> str | None:
    """Where Postgres is, without user or password (critique #24: the DSN went into the report)."""
    if not dsn:
        return None
    parts = urlsplit(dsn)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}{parts.path}"


class Gatherer:
    """Everything the report reads besides the decision-lane counters; keeps what is expensive to read
    (the truth, IG's last counts) between rounds."""

    def __init__(self, settings: Settings, platform_run_id: str, pool: Any | None) -> None:
        self.settings = settings
        self.run = platform_run_id
        self.pool = pool
        self.truth: Truth | None = None
        self.ingress: Any | None = None
        self._ig_key: tuple[Any, ...] | None = None
        self._ig_read_at = 0.0
        self.governance = GovernanceView(settings, platform_run_id)
        self._pack_offsets: dict[str, int] = {}
        self._recorded: set[str] = set()
        self.notes: list[str] = []

    # ---------------------------------------------------------------- sources

    def component_files(self) -> dict[str, dict[str, Any]]:
        root = Path(self.settings.runs_root)
        files: dict[str, dict[str, Any]] = {}
        for manifest in list_manifests():
            for spec in manifest.components:
                h = health_path(root, self.run, spec.name)
                files[spec.name] = {"pack_id": manifest.pack_id, "health_path": str(h),
                                    "metrics_path": str(metrics_path(root, self.run, spec.name)),
                                    "health": read_json(h),
                                    "metrics": read_json(metrics_path(root, self.run, spec.name))}
        return files

    async def load_truth(self, s3: Any) -> Truth | None:
        if self.truth is None:
            try:
                self.truth = await load_truth(s3, self.settings.buckets.platform, self.run)
            except Exception as exc:
                if not classify(exc).transient and not isinstance(exc, msgspec.ValidationError | ValueError):
                    raise
                self.notes.append(f"truth not loaded: {type(exc).__name__}: {str(exc)[:200]}")
        return self.truth

    async def read_ingress(self, files: dict[str, dict[str, Any]]) -> None:
        ig = (files.get("ingestion_gate") or {}).get("metrics") or {}
        counters = ig.get("counters") or {}
        key = tuple(counters.get(k) for k in ("admit_total", "duplicate_total", "quarantine_total", "healed_total"))
        fresh = time.monotonic() - self._ig_read_at < IG_REFRESH_SECONDS
        if self.ingress is not None and key == self._ig_key and fresh:
            return
        if self.pool is None:
            self.notes.append("IG's tables not read: no database pool")
            return
        from fraudrt.control_ingress.ingestion_gate.reader import ingress_counts

        try:
            self.ingress = await ingress_counts(self.pool, self.run)
            self._ig_key, self._ig_read_at = key, time.monotonic()
        except Exception as exc:
            if not classify(exc).transient and "ig_admissions" not in str(exc):
                raise
            # IG's tables not created yet (IG never ran here), or Postgres is briefly away.
            self.notes.append(f"IG's decisions not read: {type(exc).__name__}: {str(exc)[:200]}")

    # ---------------------------------------------------------------- the report

    def build(self, counts: dict[str, int], unscored: int, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
        components = R.component_section(files)
        ingress = R.ingress_section(self.ingress, None)
        rtdl = R.rtdl_section(counts)
        quality = R.quality_section(counts, self.truth, unscored)
        json_path, html_path = report_paths(self.settings, self.run)
        bucket = self.settings.buckets.platform
        report: dict[str, Any] = {
            "generated_at_utc": utc_now_ts(), "platform_run_id": self.run,
            "run_completed": R.completion(rtdl, ingress, components.get("world_stream_producer")
                                          if files.get("world_stream_producer", {}).get("health") else None,
                                          self.truth),
            "ingress": ingress, "rtdl": rtdl, "latency_ms": R.latency_section(counts, components),
            "throughput": R.throughput_section(counts), "quality": quality,
            "archive": R.archive_section(components, ingress, rtdl),
            "case_labels": R.case_labels_section(components, rtdl),
            "components": {k: {kk: vv for kk, vv in v.items() if kk != "gauges"} for k, v in components.items()},
            "anomalies": R.anomalies(components, ingress, quality, rtdl),
            "evidence_refs": {
                "report": {"json": str(json_path), "html": str(html_path),
                           "object_json": f"s3://{bucket}/{self.run}/obs/platform_run_report.json",
                           "object_html": f"s3://{bucket}/{self.run}/obs/platform_run_report.html"},
                "component_health": {k: v["health_path"] for k, v in files.items() if v.get("health")},
                "component_metrics": {k: v["metrics_path"] for k, v in files.items() if v.get("metrics")},
                "environment_conformance": str(run_dir(self.settings, self.run) / "obs" /
                                               "environment_conformance.json"),
                "governance": {"events": f"s3://{bucket}/{governance_prefix(self.run)}events/",
                               "projection": f"s3://{bucket}/{projection_key(self.run)}"},
                "ig_receipts_sample": list(self.ingress.receipt_refs_sample) if self.ingress else [],
                "ig_quarantine_sample": list(self.ingress.quarantine_refs_sample) if self.ingress else [],
                "truth": None if self.truth is None else self.truth.facts_ref,
                "wsp_log": str(pack_run_dir(self.settings, self.run, "local_parity_control_ingress_v0") / "logs" /
                               "wsp_ready_consumer.log"),
            },
            "basis": {"profile": self.settings.profile, "config_digest": config_digest(
                msgspec.to_builtins(self.settings)), "postgres": _postgres_basis(self.settings.postgres.dsn),
                "s3_endpoint": self.settings.s3.endpoint_url, "kinesis_endpoint": self.settings.kinesis.endpoint_url,
                "notes": list(dict.fromkeys(self.notes))},
        }
        self.notes.clear()
        return report

    async def write(self, s3: Any, report: dict[str, Any]) -> tuple[Path, Path]:
        json_path, html_path = report_paths(self.settings, self.run)
        html = render(report)
        data = json.dumps(report, indent=2, sort_keys=True, default=str)

        def local() -> None:
            write_json_atomic(json_path, report)
            tmp = html_path.with_suffix(".html.tmp")
            tmp.write_text(html)
            tmp.replace(html_path)

        await anyio.to_thread.run_sync(local)
        bucket = self.settings.buckets.platform
        await s3.put_object(Bucket=bucket, Key=f"{self.run}/obs/platform_run_report.json", Body=data.encode(),
                            ContentType="application/json")
        await s3.put_object(Bucket=bucket, Key=f"{self.run}/obs/platform_run_report.html", Body=html.encode(),
                            ContentType="text/html; charset=utf-8")
        return json_path, html_path

    # ---------------------------------------------------------------- governance

    async def _once(self, s3: Any, family: str, dedupe_key: str, details: dict[str, Any]) -> None:
        if dedupe_key in self._recorded:
            return
        await record(self.settings, self.run, family, source_component=COMPONENT, dedupe_key=dedupe_key,
                     details=details, s3=s3)
        self._recorded.add(dedupe_key)

    async def _pack_events(self, s3: Any) -> None:
        """Packs up and down, from each pack's run-scoped events.jsonl (read from where it stopped)."""
        for manifest in list_manifests():
            path = pack_run_dir(self.settings, self.run, manifest.pack_id) / "events.jsonl"
            if not path.is_file():
                continue
            data = await anyio.to_thread.run_sync(_read_from, path, self._pack_offsets.get(manifest.pack_id, 0))
            complete = data[:data.rfind(b"\n") + 1]
            self._pack_offsets[manifest.pack_id] = self._pack_offsets.get(manifest.pack_id, 0) + len(complete)
            for line in complete.splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind = {"pack_started": "PACK_STARTED", "pack_stopped": "PACK_STOPPED"}.get(event.get("event"))
                if kind:
                    await self._once(s3, kind, f"{manifest.pack_id}:{event.get('pid')}:{event['event']}",
                                     {"pack_id": manifest.pack_id, "pid": event.get("pid"),
                                      "at": event.get("ts_utc"), "components": event.get("components")})

    async def _ready_signals(self, s3: Any) -> None:
        prefix = f"{self.run}/sr/ready_signal/"
        listed = await s3.list_objects_v2(Bucket=self.settings.buckets.platform, Prefix=prefix)
        for obj in listed.get("Contents", []):
            scenario_run = obj["Key"][len(prefix):].removesuffix(".json")
            await self._once(s3, "RUN_READY_SEEN", f"ready:{scenario_run}",
                             {"scenario_run_id": scenario_run, "ready_ref": f"s3://{self.settings.buckets.platform}/"
                                                                           f"{obj['Key']}"})

    async def governance_round(self, s3: Any, report: dict[str, Any]) -> None:
        await self._once(s3, "RUN_STARTED", "run_started", {"observed_by": COMPONENT,
                                                            "run_dir": str(run_dir(self.settings, self.run))})
        await self._ready_signals(s3)
        await self._pack_events(s3)
        completed = report["run_completed"]["run_completed"]
        summary = {"decisions": report["rtdl"]["decisions"], "run_completed": completed,
                   "report": report["evidence_refs"]["report"]["object_json"]}
        await self._once(s3, "RUN_REPORT_GENERATED", "first_report", summary)
        if completed:
            await self._once(s3, "RUN_REPORT_GENERATED", "completed_report", summary)
            await self._once(s3, "RUN_COMPLETED", "run_completed",
                             {"decisions": report["rtdl"]["decisions"], "outcomes": report["rtdl"]["outcomes"],
                              "audits": report["rtdl"]["audits"]})
        for kind, count in report["anomalies"].items():
            await self._once(s3, "ANOMALY", f"anomaly:{kind}", {"kind": kind, "count_when_first_seen": count})
        await self.governance.compact(s3)

    # ---------------------------------------------------------------- one round

    async def round(self, counts: dict[str, int], unscored: int) -> dict[str, Any]:
        files = await anyio.to_thread.run_sync(self.component_files)
        await self.read_ingress(files)
        async with s3_client(self.settings.s3, max_attempts=2, connect_timeout=10, read_timeout=30) as s3:
            await self.load_truth(s3)
            report = self.build(counts, unscored, files)
            await self.write(s3, report)
            await self.governance_round(s3, report)
        return report
