"""The Case Management actor: `case_trigger` events in; cases, timelines and AUTO labels out; and the
investigator API beside it (its supervised background task).

A trigger whose ids or hash do not follow from its content (`trigger_problem`) or that does not
decode is dead-lettered with the reason; `label_assertion` events on the same stream belong to the
Label Store and are passed over. The intake (`_intake.py`) writes the cases, the timeline events
and the AUTO label assertions' outbox rows with the checkpoint, in one transaction: there is no
moment between "case created" and "label emitted" for a crash to fall into (the reference lost
labels there: critique #7).

The API listens on `case_labels.api_host:api_port` (127.0.0.1:8091 by default; port 0 picks a free
one). Where it listens is in this component's health details and in
`runs/fraud-platform/<run>/case_mgmt/api.json`, written when it opens.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Final

from aiohttp import web

from fraudrt.config import Settings
from fraudrt.contracts import CASE_TRIGGER, CaseTriggerPayload, trigger_problem, utc_now_ts, write_json_atomic
from fraudrt.control_ingress.ingestion_gate import KeyRing, load_keys
from fraudrt.runtime import Batch, ComponentContext
from fraudrt.runtime.packs import component_dir

from .._base import CountingActor, case_stream_payloads
from .._health import Check
from ._api import CaseApi
from ._intake import take_triggers
from ._openapi import HEADER_NAME
from ._timeline import label_emits

log = logging.getLogger("fraudrt.case_mgmt")

KEYS_ENV: Final = "CASE_API_KEYS"
# Test-only crash point (tests/chaos/test_case_labels_kill9.py): SIGKILL once this many cases were
# created, right after their batch committed (cases, timeline and label rows durable, the labels
# not yet published).
CRASH_AFTER_CASES_ENV: Final = "FRAUDRT_TEST_CM_CRASH_AFTER_CASES"


def api_keys_path(settings: Settings) -> Path:
    if settings.case_labels.api_keys_file:
        return Path(settings.case_labels.api_keys_file)
    return Path(settings.home) / "secrets" / "case_api_keys"


def case_api_key(settings: Settings) -> str:
    """The first configured key (what the runbook's curl examples and the tests send)."""
    return load_keys(api_keys_path(settings), KEYS_ENV, service="case API")[0]


class CaseMgmt(CountingActor):
    name: ClassVar[str] = "case_mgmt"
    sql_packages: ClassVar[tuple[str, ...]] = ("fraudrt.case_labels", "fraudrt.case_labels.case_mgmt")
    has_background: ClassVar[bool] = True
    counter_names: ClassVar[tuple[str, ...]] = ("triggers", "cases_created", "duplicates", "mismatches",
                                                "timeline_events", "labels_emitted", "dead_letters")

    def __init__(self) -> None:
        super().__init__()
        self.auto_label_value = ""
        self.case_stream = ""
        self.api: CaseApi | None = None
        self.api_url: str | None = None
        self._crash_after = int(os.environ.get(CRASH_AFTER_CASES_ENV) or 0)
        self._started = time.monotonic()

    def subscriptions(self, settings: Settings) -> list[str]:
        return [settings.streams.name("case")]

    async def start(self, ctx: ComponentContext) -> None:
        await super().start(ctx)
        self.auto_label_value = ctx.settings.case_labels.auto_label_value
        self.case_stream = ctx.settings.streams.name("case")

    # ------------------------------------------------------------------ intake

    async def handle(self, batch: Batch) -> None:
        triggers = case_stream_payloads(batch, CASE_TRIGGER, CaseTriggerPayload, trigger_problem)
        intake = await take_triggers(batch.conn, batch.platform_run_id, batch.component, triggers,
                                     self.auto_label_value)
        for emit in label_emits(intake.events, self.case_stream):
            batch.emit(emit.stream, emit.data, partition_key=emit.partition_key, event_id=emit.event_id)
        await self.count(batch, Counter(triggers=intake.new_triggers, duplicates=intake.duplicates,
                                        mismatches=intake.mismatches, cases_created=intake.cases_created,
                                        timeline_events=len(intake.events), labels_emitted=intake.labels))

    async def after_commit(self, batch: Batch) -> None:
        await super().after_commit(batch)
        assert self.counters is not None
        if (self._crash_after and self.counters["cases_created"] >= self._crash_after
                and batch.notes["counts"]["cases_created"]):
            # Before the relay has had a turn of the event loop: the batch's labels are outbox rows.
            os.kill(os.getpid(), signal.SIGKILL)

    # ------------------------------------------------------------------ the API

    async def background(self, ctx: ComponentContext) -> None:
        cfg = ctx.settings.case_labels
        keys = KeyRing(load_keys(api_keys_path(ctx.settings), KEYS_ENV, service="case API"))
        self.api = CaseApi(ctx.pool, keys, platform_run_id=ctx.platform_run_id, outbox=ctx.write_outbox,
                           case_stream=ctx.settings.streams.name("case"), max_body_bytes=cfg.api_max_body_bytes,
                           health=self.health_body)
        runner = web.AppRunner(self.api.app(), access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, cfg.api_host, cfg.api_port)
            await site.start()
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            port = sockets[0].getsockname()[1] if sockets else cfg.api_port
            host = cfg.api_host if ":" not in cfg.api_host else f"[{cfg.api_host}]"
            self.api_url = f"http://{host}:{port}"
            where = component_dir(ctx.settings, ctx.platform_run_id, ctx.component or self.name) / "api.json"
            write_json_atomic(where, {
                "url": self.api_url, "host": cfg.api_host, "port": port, "key_header": HEADER_NAME,
                "keys_file": str(api_keys_path(ctx.settings)), "openapi": f"{self.api_url}/v1/openapi.json",
                "console": f"{self.api_url}/console", "platform_run_id": ctx.platform_run_id, "pid": os.getpid(),
                "opened_at_utc": utc_now_ts()})
            log.info("case API listening on %s (run %s)", self.api_url, ctx.platform_run_id)
            await ctx.stopping.wait()
        finally:
            await runner.cleanup()
            log.info("case API stopped")

    # ------------------------------------------------------------------ health and metrics

    def checks(self) -> list[Check]:
        t = self.thresholds
        return [*super().checks(),
                ("API_5XX", self.api.errors_5xx if self.api else 0, t.api_errors_amber, t.api_errors_red)]

    def metrics(self) -> dict[str, Any]:
        out = super().metrics()
        if out and self.api is not None:
            out.update(api_requests=self.api.requests, api_errors_5xx=self.api.errors_5xx)
        return out

    def health_details(self) -> dict[str, Any]:
        return {"api_url": self.api_url, **self.metrics()}

    def health_body(self) -> dict[str, Any]:
        state, reasons = self.health()
        return {"state": state, "reasons": reasons, "component": self.name,
                "uptime_seconds": round(time.monotonic() - self._started, 1), "counters": self.metrics(),
                "api_url": self.api_url}


def read_api_file(settings: Settings, platform_run_id: str) -> dict[str, Any]:
    """`case_mgmt/api.json` of a run: where its investigator API listens."""
    path = component_dir(settings, platform_run_id, CaseMgmt.name) / "api.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


