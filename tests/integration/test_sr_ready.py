"""Scenario Runner on the embedded substrate: ledger + READY, deterministic message_id, --reuse, refusals.

The oracle world is written by hand in the documented layout (run receipt, pack manifest, seal, one
stream view per output with manifest and receipt), so these tests pin the SR/WSP contract on their
own; `hand_world` is shared with the WSP tests.
"""

from __future__ import annotations

import io
import json
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fraudrt.config import Settings, project_root

if str(project_root()) not in sys.path:
    sys.path.insert(0, str(project_root()))

from fraudrt.contracts import ready_message_id, scenario_run_id, sha256_hex, stream_view_id
from fraudrt.control_ingress.scenario_runner import (
    ReadyPayload,
    ReadyRequest,
    RunFactsView,
    ScenarioRunnerError,
    decode_control_message,
    sr_ready,
)
from fraudrt.runtime import KinesisBus
from fraudrt.substrate import s3_client
from tests.support.harness import create_streams, make_scope, read_all

pytestmark = pytest.mark.integration

FRAUD_OUTPUTS = ["arrival_events_5B", "s1_arrival_entities_6B", "s3_flow_anchor_with_fraud_6B",
                 "s3_event_stream_with_fraud_6B"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ts(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class HandWorld:
    """A tiny sealed world with sorted stream views: flow i arrives at t0+i s (arrival, entity, anchor and
    AUTH_REQUEST share that instant), its AUTH_RESPONSE follows 0.5 s later."""

    root_uri: str
    scenario_id: str
    manifest_fingerprint: str
    parameter_hash: str
    seed: int
    engine_run_id: str
    oracle_pack_id: str
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    parts: dict[str, list[str]] = field(default_factory=dict)


def world_rows(n_flows: int, mf: str, ph: str, seed: int, scenario_id: str) -> dict[str, list[dict[str, Any]]]:
    base = {"seed": seed, "manifest_fingerprint": mf, "parameter_hash": ph, "scenario_id": scenario_id}
    arrivals, entities, anchors, events = [], [], [], []
    for i in range(n_flows):
        merchant, seq, flow = 1 + i % 3, i + 1, 10_000 + i
        arrivals.append({**base, "merchant_id": merchant, "arrival_seq": seq, "ts_utc": ts(i)})
        entities.append({**base, "merchant_id": merchant, "arrival_seq": seq, "party_id": 500 + i, "ts_utc": ts(i)})
        anchors.append({**base, "flow_id": flow, "merchant_id": merchant, "arrival_seq": seq, "ts_utc": ts(i)})
        events.append({**base, "flow_id": flow, "event_seq": 0, "event_type": "AUTH_REQUEST", "ts_utc": ts(i)})
        events.append({**base, "flow_id": flow, "event_seq": 1, "event_type": "AUTH_RESPONSE", "ts_utc": ts(i + 0.5)})
    return dict(zip(FRAUD_OUTPUTS, [arrivals, entities, anchors, events], strict=True))


def _parquet(rows: list[dict[str, Any]], row_group_size: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf, row_group_size=row_group_size)
    return buf.getvalue()


async def hand_world(settings: Settings, *, n_flows: int = 12, rows_per_part: int = 8, row_group_size: int = 3,
                     sealed: bool = True, skip_receipt_for: str | None = None,
                     scenario_id: str = "baseline_v1") -> HandWorld:
    """Write the world to `s3://<oracle bucket>/hand/<uuid>/<engine run id>` and return its description."""
    engine_run_id = uuid.uuid4().hex
    mf, ph, seed = sha256_hex("mf" + engine_run_id), sha256_hex("ph" + engine_run_id), 42
    bucket = settings.buckets.oracle
    prefix = f"hand/{uuid.uuid4().hex[:8]}/{engine_run_id}"
    root_uri = f"s3://{bucket}/{prefix}"
    pack_id = sha256_hex(f"pack|{engine_run_id}")
    world = HandWorld(root_uri, scenario_id, mf, ph, seed, engine_run_id, pack_id,
                      rows=world_rows(n_flows, mf, ph, seed, scenario_id))

    def doc(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, sort_keys=True).encode()

    async with s3_client(settings.s3) as s3:
        await s3.put_object(Bucket=bucket, Key=f"{prefix}/run_receipt.json", Body=doc(
            {"run_id": engine_run_id, "manifest_fingerprint": mf, "parameter_hash": ph, "seed": seed,
             "created_utc": "2026-01-01T00:00:00.000000Z"}))
        await s3.put_object(Bucket=bucket, Key=f"{prefix}/_oracle_pack_manifest.json", Body=doc(
            {"version": "v0", "oracle_pack_id": pack_id, "engine_release": "hand",
             "world_key": {"manifest_fingerprint": mf, "parameter_hash": ph, "scenario_id": scenario_id,
                           "seed": seed}}))
        if sealed:
            await s3.put_object(Bucket=bucket, Key=f"{prefix}/_SEALED.json", Body=doc(
                {"version": "v0", "oracle_pack_id": pack_id, "seal_status": "SEALED_OK"}))
        for output_id, rows in world.rows.items():
            view = f"{prefix}/stream_view/ts_utc/output_id={output_id}"
            keys = []
            for n, start in enumerate(range(0, len(rows), rows_per_part)):
                key = f"{view}/part-{n:06d}.parquet"
                await s3.put_object(Bucket=bucket, Key=key,
                                    Body=_parquet(rows[start:start + rows_per_part], row_group_size))
                keys.append(f"s3://{bucket}/{key}")
            world.parts[output_id] = keys
            view_id = stream_view_id(engine_run_root=root_uri, scenario_id=scenario_id, output_id=output_id)
            common = {"stream_view_id": view_id, "engine_run_root": root_uri, "output_id": output_id,
                      "output_ids": [output_id], "sort_keys": ["ts_utc", "filename", "file_row_number"],
                      "partition_granularity": "flat"}
            await s3.put_object(Bucket=bucket, Key=f"{view}/_stream_view_manifest.json", Body=doc(
                {**common, "scenario_id": scenario_id, "engine_run_id": engine_run_id}))
            if output_id != skip_receipt_for:
                await s3.put_object(Bucket=bucket, Key=f"{view}/_stream_sort_receipt.json", Body=doc(
                    {**common, "status": "OK", "raw_stats": {"row_count": len(rows)},
                     "sorted_stats": {"row_count": len(rows)}}))
    return world


def ready_request(scope_run: str, world: HandWorld, key: str, **kw: Any) -> ReadyRequest:
    return ReadyRequest(platform_run_id=scope_run, run_equivalence_key=key, engine_run_root=world.root_uri,
                        scenario_id=world.scenario_id, **kw)


async def control_messages(settings: Settings) -> list[Any]:
    async with KinesisBus(settings.kinesis) as bus:
        records = await read_all(bus, settings.streams.name("control"))
    return [decode_control_message(r.data) for r in records]


async def get_json(settings: Settings, key: str) -> dict[str, Any]:
    async with s3_client(settings.s3) as s3:
        resp = await s3.get_object(Bucket=settings.buckets.platform, Key=key)
        async with resp["Body"] as body:
            data: dict[str, Any] = json.loads(await body.read())
    return data


# ------------------------------------------------------------------------------------------- tests


async def test_ready_writes_ledger_and_publishes_ready_with_deterministic_message_id(
        substrate: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, ["control"])
    world = await hand_world(scope.settings)
    key = f"parity_{uuid.uuid4().hex[:8]}"

    result = await sr_ready(scope.settings, ready_request(scope.run_id, world, key))

    srid = scenario_run_id(key)
    assert result.scenario_run_id == srid and result.kind == "READY" and not result.reused
    assert result.outputs == FRAUD_OUTPUTS
    prefix = f"{scope.run_id}/sr"
    plan = await get_json(scope.settings, f"{prefix}/run_plan/{srid}.json")
    facts_doc = await get_json(scope.settings, f"{prefix}/run_facts_view/{srid}.json")
    ready_doc = await get_json(scope.settings, f"{prefix}/ready_signal/{srid}.json")
    assert plan["mode"] == "fraud" and plan["context_output_ids"] == FRAUD_OUTPUTS[:3]
    facts = msgspec.convert(facts_doc, RunFactsView)
    assert facts.intended_outputs == FRAUD_OUTPUTS
    assert facts.pins.run_id == world.engine_run_id and facts.pins.platform_run_id == scope.run_id
    assert [len(loc.parts) for loc in facts.locators] == [2, 2, 2, 3]
    assert facts.locators[0].stream_view_root == f"{world.root_uri}/stream_view/ts_utc/output_id=arrival_events_5B"
    # message_id = sha256("ready|<platform run>|<scenario run>|<bundle hash>")
    assert result.message_id == ready_message_id(scope.run_id, srid, facts.bundle_hash)
    ready = msgspec.convert(ready_doc, ReadyPayload)
    assert ready.message_id == result.message_id and ready.facts_view_ref == f"{prefix}/run_facts_view/{srid}.json"

    messages = await control_messages(scope.settings)
    assert len(messages) == 1
    (msg,) = messages
    assert msg.topic == "fp.bus.control.v1" and msg.message_id == result.message_id
    assert msg.attributes.kind == "READY" and msg.partition_key == srid and msg.payload == ready

    log = (Path(scope.settings.runs_root) / "fraud-platform" / scope.run_id / "scenario_runner"
           / "scenario_runner.log").read_text()
    assert "READY committed" in log and "READY published" in log


async def test_reuse_re_emits_the_same_message_id_and_refuses_without_reuse(substrate: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, ["control"])
    world = await hand_world(scope.settings)
    key = f"parity_{uuid.uuid4().hex[:8]}"
    first = await sr_ready(scope.settings, ready_request(scope.run_id, world, key))

    with pytest.raises(ScenarioRunnerError) as refused:
        await sr_ready(scope.settings, ready_request(scope.run_id, world, key))
    assert refused.value.code == "RUN_EXISTS"

    again = await sr_ready(scope.settings, ready_request(scope.run_id, world, key, reuse=True))
    assert again.reused and again.kind == "READY_REEMIT"
    assert again.message_id == first.message_id and again.scenario_run_id == first.scenario_run_id
    messages = await control_messages(scope.settings)
    assert [m.message_id for m in messages] == [first.message_id, first.message_id]
    # The re-emit carries the stored READY byte for byte (first emitted_at_utc included).
    assert messages[0].payload == messages[1].payload


async def test_same_key_with_a_different_intent_is_refused(substrate: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, ["control"])
    world = await hand_world(scope.settings)
    other_world = await hand_world(scope.settings)
    key = f"parity_{uuid.uuid4().hex[:8]}"
    await sr_ready(scope.settings, ready_request(scope.run_id, world, key))

    for request in (ready_request(scope.run_id, other_world, key, reuse=True),
                    ready_request(scope.run_id, world, key, reuse=True, window_start_utc="2026-01-02T00:00:00Z")):
        with pytest.raises(ScenarioRunnerError) as refused:
            await sr_ready(scope.settings, request)
        assert refused.value.code == "EQUIV_KEY_COLLISION"
        assert key in refused.value.message
    assert len(await control_messages(scope.settings)) == 1


async def test_missing_stream_view_receipt_or_seal_is_refused_before_any_state(substrate: Any, tmp_path: Path) -> None:
    scope = make_scope(substrate, tmp_path / "runs")
    await create_streams(scope.settings, ["control"])
    no_receipt = await hand_world(scope.settings, skip_receipt_for="s3_flow_anchor_with_fraud_6B")
    unsealed = await hand_world(scope.settings, sealed=False)
    key = f"parity_{uuid.uuid4().hex[:8]}"

    with pytest.raises(ScenarioRunnerError) as refused:
        await sr_ready(scope.settings, ready_request(scope.run_id, no_receipt, key))
    assert refused.value.code == "STREAM_VIEW_RECEIPT_MISSING"
    assert "output_id=s3_flow_anchor_with_fraud_6B" in refused.value.message
    with pytest.raises(ScenarioRunnerError) as refused:
        await sr_ready(scope.settings, ready_request(scope.run_id, unsealed, key))
    assert refused.value.code == "PACK_NOT_SEALED"
    assert await control_messages(scope.settings) == []

    # Nothing was claimed: the key is still free for a valid world.
    good = await hand_world(scope.settings)
    result = await sr_ready(scope.settings, ready_request(scope.run_id, good, key))
    assert result.kind == "READY"
