"""`fraudrt sr ready`: verify the sealed oracle world, commit the run ledger write-once, publish READY.

Order matters: every check that only reads (seal, stream views) runs before the equivalence key is
claimed, so a refused request leaves no state behind. The ledger is idempotent (write-once + compare,
timestamp-free content), so `--reuse` after a crash anywhere simply completes the run.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any, Final

import anyio
import asyncpg
import msgspec

from fraudrt.config import Settings
from fraudrt.contracts import (
    canon_compact,
    ready_message_id,
    recipe_hash,
    scenario_run_id,
    sha256_hex,
    sr_bundle_hash,
    sr_plan_hash,
    utc_now_ts,
)
from fraudrt.engine import RunReceipt
from fraudrt.oracle import STREAM_VIEW_DIR
from fraudrt.runtime import BusError
from fraudrt.runtime.bus import KinesisBus, PutEntry
from fraudrt.runtime.packs import apply_migrations, component_dir
from fraudrt.substrate import s3_client

from ._errors import ScenarioRunnerError
from ._ledger import put_once
from ._messages import (
    ControlAttributes,
    ControlMessage,
    Mode,
    OraclePackRef,
    OutputRole,
    PolicyRev,
    ReadyPayload,
    RunFactsView,
    RunPins,
    RunPlan,
    StreamViewLocator,
    encode_message,
)
from ._oracle import (
    PACK_MANIFEST_NAME,
    SEAL_NAME,
    engine_root,
    locate_stream_view,
    outputs_for_mode,
    read_sealed_pack,
)

COMPONENT: Final = "scenario_runner"
SQL_PACKAGE: Final = "fraudrt.control_ingress.scenario_runner"
log = logging.getLogger("fraudrt.scenario_runner")


class ReadyRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One `sr ready` call. `engine_run_root` is `s3://oracle-store/<root>` or a bare `<root>`."""

    platform_run_id: str
    run_equivalence_key: str
    engine_run_root: str
    scenario_id: str
    mode: Mode = "fraud"
    reuse: bool = False
    window_start_utc: str | None = None
    window_end_utc: str | None = None


class ReadyResult(msgspec.Struct, frozen=True, kw_only=True):
    platform_run_id: str
    scenario_run_id: str
    message_id: str
    facts_view_ref: str
    ready_ref: str
    reused: bool
    kind: str
    shard_id: str
    sequence_number: str
    outputs: list[str]


def sr_policy(mode: Mode, context: list[str], traffic: list[str]) -> PolicyRev:
    """The SR policy in force, with a digest computed from its content (not a typed-in constant)."""
    content = {"mode": mode, "context_output_ids": context, "traffic_output_ids": traffic,
               "require_seal": True, "require_stream_view_receipts": True}
    return PolicyRev(policy_id="sr_policy", revision="v0", content_digest=sha256_hex(canon_compact(content)))


def sr_intent(receipt: RunReceipt, request: ReadyRequest) -> dict[str, Any]:
    """What a run equivalence key stands for: world, scenario, mode and window (not where it is stored)."""
    return {"manifest_fingerprint": receipt.manifest_fingerprint, "parameter_hash": receipt.parameter_hash,
            "seed": receipt.seed, "scenario_id": request.scenario_id, "mode": request.mode,
            "window_start_utc": request.window_start_utc, "window_end_utc": request.window_end_utc}


def _ledger_prefix(platform_run_id: str) -> str:
    return f"{platform_run_id}/sr"


class _RunLog:
    """Adds `runs/fraud-platform/<run>/scenario_runner/scenario_runner.log` for the call's duration."""

    def __init__(self, settings: Settings, platform_run_id: str) -> None:
        path = component_dir(settings, platform_run_id, COMPONENT) / f"{COMPONENT}.log"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def __enter__(self) -> _RunLog:
        log.addHandler(self.handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        log.removeHandler(self.handler)
        self.handler.close()


async def _claim_equivalence(conn: Any, request: ReadyRequest, run_id: str, intent: dict[str, Any]) -> bool:
    """Insert or check the key; True when it already existed (a reuse). Refusals raise."""
    fingerprint = recipe_hash("sr.intent.v1", intent)
    async with conn.transaction():
        inserted = await conn.fetchval(
            "INSERT INTO sr_run_equivalence (run_equivalence_key, scenario_run_id, intent_fingerprint, intent) "
            "VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT (run_equivalence_key) DO NOTHING RETURNING 1",
            request.run_equivalence_key, run_id, fingerprint, json.dumps(intent, sort_keys=True))
        if inserted:
            return False
        row = await conn.fetchrow(
            "SELECT scenario_run_id, intent_fingerprint, intent FROM sr_run_equivalence "
            "WHERE run_equivalence_key = $1 FOR UPDATE", request.run_equivalence_key)
        if row["intent_fingerprint"] != fingerprint:
            stored = json.loads(row["intent"])
            diff = {k: {"stored": stored.get(k), "requested": v} for k, v in intent.items() if stored.get(k) != v}
            raise ScenarioRunnerError(
                "EQUIV_KEY_COLLISION",
                f"run equivalence key {request.run_equivalence_key!r} already names scenario run "
                f"{row['scenario_run_id']} with a different intent {diff}; use a new key for a different run")
        if not request.reuse:
            raise ScenarioRunnerError(
                "RUN_EXISTS", f"run equivalence key {request.run_equivalence_key!r} already names scenario run "
                              f"{row['scenario_run_id']}; pass --reuse to reuse it and re-emit READY")
        await conn.execute("UPDATE sr_run_equivalence SET last_seen_at = now() WHERE run_equivalence_key = $1",
                           request.run_equivalence_key)
        return True


async def _publish(settings: Settings, message: ControlMessage) -> tuple[str, str]:
    stream = settings.streams.name("control")
    data = encode_message(message)
    last_error = ""
    async with KinesisBus(settings.kinesis) as bus:
        for attempt in range(5):
            if attempt:
                # Throttling and resets clear with time, not with an instant retry.
                await anyio.sleep(min(2.0, 0.1 * 2 ** attempt) * random.uniform(0.5, 1.0))
            try:
                result = (await bus.put_records(stream, [PutEntry(data, message.partition_key)]))[0]
            except BusError as exc:
                last_error = repr(exc)
                if not exc.retriable:  # e.g. the stream does not exist: retrying cannot help
                    break
                continue
            if result.ok:
                assert result.shard_id is not None and result.sequence_number is not None
                return result.shard_id, result.sequence_number
            last_error = f"{result.error_code}: {result.error_message}"
    raise ScenarioRunnerError("READY_PUBLISH_FAILED", f"{stream}: {last_error} (READY is committed; re-run with "
                                                      "--reuse to publish it)")


async def sr_ready(settings: Settings, request: ReadyRequest) -> ReadyResult:
    """Verify, commit and publish READY for `request` (see module docstring)."""
    with _RunLog(settings, request.platform_run_id):
        try:
            return await _ready(settings, request)
        except ScenarioRunnerError as exc:
            log.error("SR: refused %s", exc)
            raise


async def _ready(settings: Settings, request: ReadyRequest) -> ReadyResult:
    if not request.run_equivalence_key:
        raise ScenarioRunnerError("RUN_EQUIVALENCE_KEY_MISSING", "set SR_RUN_EQUIVALENCE_KEY or "
                                                                 "--run-equivalence-key")
    if not request.engine_run_root:
        raise ScenarioRunnerError("ENGINE_ROOT_MISSING", "set ORACLE_ENGINE_RUN_ROOT or --engine-run-root")
    dsn = settings.postgres.dsn
    if not dsn:
        raise ScenarioRunnerError("POSTGRES_DSN_MISSING", "no Postgres DSN configured")
    prid = request.platform_run_id
    srid = scenario_run_id(request.run_equivalence_key)
    root_ref = engine_root(request.engine_run_root, settings)
    root = root_ref.uri
    log.info("SR: submit request received key=%s scenario_run_id=%s platform_run_id=%s engine_run_root=%s "
             "scenario_id=%s mode=%s reuse=%s", request.run_equivalence_key, srid, prid, root,
             request.scenario_id, request.mode, request.reuse)
    context_ids, traffic_ids = outputs_for_mode(request.mode)
    intended = [*context_ids, *traffic_ids]
    roles: dict[str, OutputRole] = {}
    for oid in context_ids:
        roles[oid] = "non_traffic"
    for oid in traffic_ids:
        roles[oid] = "business_traffic"
    bucket = settings.buckets.platform
    prefix = _ledger_prefix(prid)
    async with s3_client(settings.s3) as s3:
        receipt, manifest = await read_sealed_pack(s3, root_ref, request.scenario_id)
        locators: list[StreamViewLocator] = [
            await locate_stream_view(s3, root_ref, request.scenario_id, oid, roles[oid]) for oid in intended]
        intent = sr_intent(receipt, request)
        conn = await asyncpg.connect(dsn)
        try:
            await apply_migrations(conn, SQL_PACKAGE)
            existed = await _claim_equivalence(conn, request, srid, intent)

            policy = sr_policy(request.mode, context_ids, traffic_ids)
            plan_body: dict[str, Any] = {
                "run_id": srid, "scenario_run_id": srid, "platform_run_id": prid,
                "run_equivalence_key": request.run_equivalence_key,
                "intent_fingerprint": recipe_hash("sr.intent.v1", intent), "mode": request.mode,
                "engine_run_root": root, "scenario_id": request.scenario_id,
                "window_start_utc": request.window_start_utc, "window_end_utc": request.window_end_utc,
                "traffic_output_ids": traffic_ids, "context_output_ids": context_ids,
                "policy_rev": msgspec.to_builtins(policy),
            }
            plan = RunPlan(**{**plan_body, "policy_rev": policy}, plan_hash=sr_plan_hash(plan_body),
                           created_at_utc=utc_now_ts())
            plan_key = f"{prefix}/run_plan/{srid}.json"
            await put_once(s3, bucket, plan_key, encode_message(plan), drift_code="PLAN_DRIFT")

            locator_docs = [msgspec.to_builtins(loc) for loc in locators]
            bundle = sr_bundle_hash(locators=locator_docs, gate_receipts=[], instance_receipts=[],
                                    policy_rev=msgspec.to_builtins(policy))
            view_root = f"{root}/{STREAM_VIEW_DIR}"
            pack_ref = OraclePackRef(
                oracle_pack_id=manifest.oracle_pack_id, manifest_ref=f"{root}/{PACK_MANIFEST_NAME}",
                seal_ref=f"{root}/{SEAL_NAME}", engine_run_root=root, scenario_id=request.scenario_id,
                stream_view_root=view_root,
                stream_view_output_refs={o: f"{view_root}/output_id={o}" for o in intended},
                engine_release=manifest.engine_release)
            pins = RunPins(manifest_fingerprint=receipt.manifest_fingerprint, parameter_hash=receipt.parameter_hash,
                           seed=receipt.seed, scenario_id=request.scenario_id, run_id=receipt.run_id,
                           platform_run_id=prid, scenario_run_id=srid)
            facts = RunFactsView(
                run_id=srid, scenario_run_id=srid, platform_run_id=prid, pins=pins, mode=request.mode,
                intended_outputs=intended, output_roles=roles, locators=locators, oracle_pack_ref=pack_ref,
                policy_rev=policy, bundle_hash=bundle, run_config_digest=policy.content_digest,
                plan_ref=plan_key, created_at_utc=utc_now_ts())
            facts_key = f"{prefix}/run_facts_view/{srid}.json"
            await put_once(s3, bucket, facts_key, encode_message(facts), drift_code="FACTS_VIEW_DRIFT")

            message_id = ready_message_id(prid, srid, bundle)
            payload = ReadyPayload(
                run_id=srid, scenario_run_id=srid, platform_run_id=prid, facts_view_ref=facts_key,
                bundle_hash=bundle, message_id=message_id, run_config_digest=policy.content_digest,
                manifest_fingerprint=pins.manifest_fingerprint, parameter_hash=pins.parameter_hash,
                scenario_id=request.scenario_id, emitted_at_utc=utc_now_ts(), oracle_pack_ref=pack_ref)
            ready_key = f"{prefix}/ready_signal/{srid}.json"
            stored, created = await put_once(s3, bucket, ready_key, encode_message(payload),
                                             drift_code="READY_SIGNAL_DRIFT")
            # A re-emit carries the stored signal byte for byte (its first emitted_at_utc included).
            payload = msgspec.json.decode(stored, type=ReadyPayload)
            published_before = await conn.fetchval(
                "INSERT INTO sr_runs (platform_run_id, scenario_run_id, run_equivalence_key, state, message_id, "
                "facts_view_ref, ready_ref) VALUES ($1,$2,$3,'READY_COMMITTED',$4,$5,$6) "
                "ON CONFLICT (platform_run_id, scenario_run_id) DO UPDATE SET state = sr_runs.state "
                "RETURNING publish_count",
                prid, srid, request.run_equivalence_key, message_id, facts_key, ready_key)
            log.info("SR: READY committed scenario_run_id=%s platform_run_id=%s message_id=%s facts_view_ref=%s "
                     "bundle_hash=%s outputs=%s created=%s", srid, prid, message_id, facts_key, bundle,
                     ",".join(intended), created)

            # READY_REEMIT only when Kinesis has acknowledged this READY before, not merely because the
            # ledger already held it: an earlier attempt may have crashed (or failed to publish) after
            # writing the ledger, and then this is the first READY anyone sees. A crash after Kinesis
            # acknowledged but before the row was updated labels the re-send READY again; WSP keys
            # READYs by message_id, so the label never makes it stream twice.
            kind = "READY" if published_before == 0 else "READY_REEMIT"
            message = ControlMessage(message_id=message_id, published_at_utc=utc_now_ts(),
                                     attributes=ControlAttributes(kind=kind, run_id=srid),  # type: ignore[arg-type]
                                     partition_key=srid, payload=payload)
            shard_id, sequence = await _publish(settings, message)
            await conn.execute(
                "UPDATE sr_runs SET state = 'READY_PUBLISHED', publish_count = publish_count + 1, "
                "last_shard_id = $3, last_sequence_number = $4, published_at = now() "
                "WHERE platform_run_id = $1 AND scenario_run_id = $2", prid, srid, shard_id, sequence)
            log.info("SR: READY published message_id=%s kind=%s stream=%s shard=%s sequence=%s", message_id, kind,
                     settings.streams.name("control"), shard_id, sequence)
        finally:
            await conn.close()
    return ReadyResult(platform_run_id=prid, scenario_run_id=srid, message_id=message_id, facts_view_ref=facts_key,
                       ready_ref=ready_key, reused=existed, kind=kind, shard_id=shard_id,
                       sequence_number=sequence, outputs=intended)
