"""The case plane's test kit: decision-lane envelopes as DF, AL and DLA publish them (built from the
contracts in `fraudrt.contracts._decisions`, since the decision lane is built in parallel), traffic
AUTH_REQUESTs as WSP puts them, and the case_labels components running in this process the way
their pack runs them (shared readers, the outbox relay, the investigator API on a free port).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import msgspec

from fraudrt.case_labels import CaseMgmt, CaseTrigger, LabelStore, TruthChargebackFeed
from fraudrt.config import Settings
from fraudrt.contracts import (
    ACTION_KIND_OF,
    ACTION_OUTCOME,
    AUDIT_RECORD,
    DECISION_RESPONSE,
    DECISION_SCOPE,
    TXN_DISPOSITION,
    ActionOutcomePayload,
    Attempt,
    AuditRecordPayload,
    BundleRef,
    Contribution,
    DecisionPayload,
    DecisionTimings,
    Envelope,
    FeatureBasis,
    Pins,
    PostureRef,
    SourceEvent,
    action_id,
    action_idempotency_key,
    action_outcome_id,
    audit_chain_id,
    decision_id,
    decision_response_event_id,
    encode_envelope,
)
from fraudrt.runtime import Actor, ComponentContext
from fraudrt.runtime._outbox import OutboxRelay  # the pack's relay: tests run it beside a LocalPack
from fraudrt.runtime.bus import KinesisBus
from fraudrt.runtime.packs import apply_migrations

from .harness import LocalPack

TRAFFIC_TYPE = "s3_event_stream_with_fraud_6B"
CASE_SQL = ("fraudrt.case_labels", "fraudrt.case_labels.case_trigger", "fraudrt.case_labels.case_mgmt",
            "fraudrt.case_labels.label_store", "fraudrt.case_labels.truth_chargeback_feed")


def hx(n: int, *parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:n]


def run_pins(run: str) -> Pins:
    return Pins(platform_run_id=run, scenario_run_id=hx(32, "srid", run), manifest_fingerprint=hx(64, "mf", run),
                parameter_hash=hx(64, "ph", run), seed=42, scenario_id="baseline_v1", run_id=hx(32, "rid", run))


def ts(second: float) -> str:
    """A world time: 2026-01-01T00:00:00Z plus `second` seconds."""
    whole = int(second)
    micros = round((second - whole) * 1_000_000)
    return f"2026-01-01T{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}.{micros:06d}Z"


def source_event_id(run: str, flow_id: int) -> str:
    return hx(64, "auth_request", run, flow_id)


def _envelope(pins: Pins, *, event_id: str, event_type: str, at: str, producer: str, parent: str | None,
              payload: Any) -> bytes:
    return encode_envelope(Envelope(
        event_id=event_id, event_type=event_type, schema_version="v1", ts_utc=at,
        platform_run_id=pins.platform_run_id, scenario_run_id=pins.scenario_run_id,
        manifest_fingerprint=pins.manifest_fingerprint, parameter_hash=pins.parameter_hash, seed=pins.seed,
        scenario_id=pins.scenario_id, run_id=pins.run_id, producer=producer, parent_event_id=parent,
        payload=msgspec.to_builtins(payload)))


def traffic_request(pins: Pins, flow_id: int, second: float, *, event_type: str = "AUTH_REQUEST") -> bytes:
    """An AUTH_REQUEST (or AUTH_RESPONSE) of the fraud-mode traffic stream, truth columns included, as WSP
    sends it (the feed must not need them: it reads truth from the world)."""
    at = ts(second)
    eid = source_event_id(pins.platform_run_id, flow_id) if event_type == "AUTH_REQUEST" else hx(
        64, "auth_response", pins.platform_run_id, flow_id)
    return _envelope(pins, event_id=eid, event_type=TRAFFIC_TYPE, at=at, producer="svc:world_stream_producer",
                     parent=None, payload={"flow_id": flow_id, "event_seq": 0 if event_type == "AUTH_REQUEST" else 1,
                                           "event_type": event_type, "ts_utc": at, "amount": 12.5,
                                           "fraud_flag": False, "campaign_id": None})


@dataclass(frozen=True)
class Decided:
    envelope: bytes
    payload: DecisionPayload


def decision(pins: Pins, flow_id: int, *, action: str, score: float | None, second: float = 0.0,
             traffic_stream: str = "fp.bus.traffic.fraud.v1") -> Decided:
    run = pins.platform_run_id
    src = source_event_id(run, flow_id)
    at = ts(second)
    payload = DecisionPayload(
        decision_id=decision_id(run, src), source_event=SourceEvent(
            event_id=src, event_type=TRAFFIC_TYPE, ts_utc=at, stream=traffic_stream, shard_id="shardId-000000000000",
            sequence_number=str(10**20 + flow_id)),
        flow_id=flow_id, action=action, score=score,  # type: ignore[arg-type]
        reason_codes=["HIGH_SCORE"] if score and score > 0.5 else [],
        rules_fired=["velocity_1h"] if flow_id % 2 else [],
        top_features=[Contribution(name="party_amount_sum_1h", value=420.0, contribution=1.25),
                      Contribution(name="device_new_for_party", value=1.0, contribution=0.5)],
        bundle=BundleRef(bundle_id="df_bundle", version="v1", digest=hx(64, "bundle")), features=FeatureBasis(),
        posture=PostureRef(mode="NORMAL", posture_seq=1), context_status="COMPLETE",
        timings=DecisionTimings(admitted_at_utc=at, decided_at_utc=at, admit_to_decision_ms=3.0),
        run_config_digest=hx(64, "rcd"))
    env = _envelope(pins, event_id=decision_response_event_id(src, msgspec.to_builtins(pins), DECISION_SCOPE),
                    event_type=DECISION_RESPONSE, at=at, producer="decision_fabric", parent=src, payload=payload)
    return Decided(env, payload)


def outcome(pins: Pins, d: DecisionPayload, status: str) -> bytes:
    src = d.source_event.event_id
    kind = ACTION_KIND_OF[d.action]
    key = action_idempotency_key(src, TXN_DISPOSITION, msgspec.to_builtins(pins))
    aid = action_id(d.decision_id, TXN_DISPOSITION)
    at = d.timings.decided_at_utc
    payload = ActionOutcomePayload(
        outcome_id=action_outcome_id(d.decision_id, aid, key), action_id=aid, decision_id=d.decision_id,
        action_kind=kind, idempotency_key=key, status=status, reason_code=f"PROVIDER_{status}",  # type: ignore[arg-type]
        attempts=[Attempt(attempt_seq=1, state="PERMANENT_FAILURE" if status == "FAILED" else "SUCCEEDED",
                          provider_code="E1")],
        source_event_id=src, admitted_at_utc=at, decided_at_utc=at, requested_at_utc=at, completed_at_utc=at)
    return _envelope(pins, event_id=payload.outcome_id, event_type=ACTION_OUTCOME, at=d.source_event.ts_utc,
                     producer="action_layer", parent=d.decision_id, payload=payload)


def audit(pins: Pins, d: DecisionPayload, chain_status: str) -> bytes:
    at = d.timings.decided_at_utc
    payload = AuditRecordPayload(
        audit_id=audit_chain_id(pins.platform_run_id, d.decision_id), decision_id=d.decision_id,
        source_event_id=d.source_event.event_id, action=d.action, chain_status=chain_status,  # type: ignore[arg-type]
        unresolved_reasons=["OUTCOME_MISSING"] if chain_status == "UNRESOLVED" else [], admitted_at_utc=at,
        decided_at_utc=at, audited_at_utc=at, admit_to_audit_ms=9.0)
    return _envelope(pins, event_id=payload.audit_id, event_type=AUDIT_RECORD, at=d.source_event.ts_utc,
                     producer="decision_log_audit", parent=d.decision_id, payload=payload)


# ------------------------------------------------------------------------------ in-process plane


@dataclass
class Plane:
    settings: Settings
    run: str
    pool: Any
    bus: KinesisBus
    pack: LocalPack
    api_url: str | None = None
    api_key: str | None = None
    components: dict[str, Actor] = field(default_factory=dict)

    @property
    def case_mgmt(self) -> CaseMgmt:
        comp = self.components["case_mgmt"]
        assert isinstance(comp, CaseMgmt)
        return comp

    def headers(self) -> dict[str, str]:
        assert self.api_key is not None
        return {"X-Case-Api-Key": self.api_key}


@asynccontextmanager
async def running_plane(settings: Settings, run: str, pool: Any, bus: KinesisBus, *,
                        components: Sequence[str] = ("case_trigger", "case_mgmt", "label_store"),
                        api: bool = False, api_key: str | None = None) -> AsyncIterator[Plane]:
    """The named case_labels components in one LocalPack, a relay for their outbox rows, and (api=True)
    the investigator API on a free loopback port with `api_key`."""
    classes: dict[str, type[Actor]] = {"case_trigger": CaseTrigger, "case_mgmt": CaseMgmt,
                                       "label_store": LabelStore, "truth_chargeback_feed": TruthChargebackFeed}
    async with pool.acquire() as conn:
        await apply_migrations(conn, "fraudrt.runtime", *CASE_SQL)
    actors = {name: classes[name]() for name in components}
    pack_id = f"test_case_{uuid.uuid4().hex[:8]}"
    async with LocalPack(settings, list(actors.items()), run, pool, bus, pack_id=pack_id) as pack:
        plane = Plane(settings, run, pool, bus, pack, components=dict(actors))
        relay = OutboxRelay(pool, bus, owner=pack_id, idle_sleep=0.05)
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay.run, pack.stopping)
            if api:
                cm = actors["case_mgmt"]
                assert isinstance(cm, CaseMgmt) and api_key is not None
                ctx = ComponentContext(settings=settings, platform_run_id=run, pack_id=pack_id, pool=pool,
                                       component="case_mgmt", stopping=pack.stopping)
                tg.start_soon(cm.background, ctx)
                while cm.api_url is None:
                    await anyio.sleep(0.02)
                plane.api_url, plane.api_key = cm.api_url, api_key
            try:
                yield plane
            finally:
                pack.stopping.set()


@asynccontextmanager
async def plane_with_cases(substrate: Any, tmp_path: Any, flows: int = 3) -> AsyncIterator[Plane]:
    """CT, CM (with the API on a free port, keys in a file of this test) and LS on private streams and
    runs root, after `flows` REVIEW decisions (scores 0.5 + flow/10) have become cases."""
    from fraudrt.case_labels.case_mgmt import case_api_key
    from fraudrt.substrate import bootstrap

    from .harness import mint_run_id, new_prefix, open_pool, put, wait_for

    settings = substrate.settings_for(FRAUDRT_STREAM_PREFIX=new_prefix(), FRAUDRT_RUNS_ROOT=str(tmp_path / "runs"),
                                      CASE_API_PORT="0", CASE_API_KEYS_FILE=str(tmp_path / "case_api_keys"))
    await bootstrap(settings)
    run = mint_run_id()
    pins = run_pins(run)
    async with open_pool(settings) as pool, KinesisBus(settings.kinesis) as bus:
        await put(bus, settings.streams.name("rtdl"),
                  [decision(pins, f, action="REVIEW", score=0.5 + f / 10, second=f).envelope for f in range(flows)])
        async with running_plane(settings, run, pool, bus, api=True, api_key=case_api_key(settings)) as p:

            async def created() -> int:
                return int(p.case_mgmt.metrics().get("cases_created", 0))

            await wait_for(created, lambda n: n == flows, what="the cases")
            yield p


async def api_call(plane: Plane, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
    assert plane.api_url is not None
    async with aiohttp.ClientSession() as http, http.request(
            method, plane.api_url + path, headers=plane.headers() if headers is None else headers,
            data=raw if raw is not None else (None if body is None else msgspec.json.encode(body))) as resp:
        text = await resp.read()
        try:
            return resp.status, msgspec.json.decode(text)
        except msgspec.DecodeError:
            return resp.status, text


@asynccontextmanager
async def held(cm: Any) -> AsyncIterator[Any]:
    """Enter and leave the async context manager `cm` inside one task of its own, so that a pytest
    fixture (whose setup and teardown may run in different tasks) can hold a task group open."""
    import asyncio

    ready, done = asyncio.Event(), asyncio.Event()
    box: dict[str, Any] = {}

    async def hold() -> None:
        async with cm as value:
            box["value"] = value
            ready.set()
            await done.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.is_set():
        waiter.cancel()
        await task  # raises what went wrong
    try:
        yield box["value"]
    finally:
        done.set()
        await task
