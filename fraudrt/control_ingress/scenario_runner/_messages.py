"""SR's messages and ledger documents (control_ingress §5.7, §6): the READY payload, the control-bus
envelope that carries it, the run plan and the run facts view WSP streams from.

Timestamps (`created_at_utc`, `emitted_at_utc`) are the only fields that may differ between two
writes of the same fact; the write-once comparison ignores exactly these (`LEDGER_VOLATILE_FIELDS`).
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

CONTROL_TOPIC: Final = "fp.bus.control.v1"
LEDGER_VOLATILE_FIELDS: Final[frozenset[str]] = frozenset({"created_at_utc", "emitted_at_utc"})

Mode = Literal["fraud", "baseline"]
OutputRole = Literal["business_traffic", "non_traffic"]


class PartRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One part file of a stream view, as the oracle's manifest lists it (sha256 of the whole object).
    Binding the view by these digests means SR never downloads data to digest it (critique §13.1 #4)."""

    uri: str
    size: int
    digest: str
    rows: int
    first_ts_utc: str
    last_ts_utc: str


class StreamViewLocator(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    output_id: str
    role: OutputRole
    stream_view_root: str
    stream_view_id: str
    receipt_ref: str
    manifest_ref: str
    primary_key: list[str]
    row_count: int | None = None
    parts: list[PartRef]
    content_digest: str


class PolicyRev(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    policy_id: str
    revision: str
    content_digest: str


class OraclePackRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    oracle_pack_id: str
    manifest_ref: str
    seal_ref: str
    engine_run_root: str
    scenario_id: str
    stream_view_root: str
    stream_view_output_refs: dict[str, str]
    engine_release: str | None = None


class RunPins(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    manifest_fingerprint: str
    parameter_hash: str
    seed: int
    scenario_id: str
    run_id: str
    platform_run_id: str
    scenario_run_id: str


class RunPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`sr/run_plan/<scenario_run_id>.json`: what SR intends; timestamp-free apart from `created_at_utc`
    (critique §13.2 #15), so a re-run compares equal."""

    run_id: str
    scenario_run_id: str
    platform_run_id: str
    run_equivalence_key: str
    intent_fingerprint: str
    mode: Mode
    engine_run_root: str
    scenario_id: str
    window_start_utc: str | None = None
    window_end_utc: str | None = None
    traffic_output_ids: list[str]
    context_output_ids: list[str]
    policy_rev: PolicyRev
    plan_hash: str
    created_at_utc: str


class RunFactsView(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`sr/run_facts_view/<scenario_run_id>.json`: everything WSP needs, so it lists no bucket and
    reads no catalogue. `intended_outputs` is the merge's tie order (context first)."""

    run_id: str
    scenario_run_id: str
    platform_run_id: str
    pins: RunPins
    mode: Mode
    intended_outputs: list[str]
    output_roles: dict[str, OutputRole]
    locators: list[StreamViewLocator]
    oracle_pack_ref: OraclePackRef
    policy_rev: PolicyRev
    bundle_hash: str
    run_config_digest: str
    plan_ref: str
    created_at_utc: str


class ReadyPayload(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`run_ready_signal` (§5.7 table); also stored write-once as `sr/ready_signal/<id>.json`."""

    run_id: str
    scenario_run_id: str
    platform_run_id: str
    facts_view_ref: str
    bundle_hash: str
    message_id: str
    run_config_digest: str
    manifest_fingerprint: str
    parameter_hash: str
    scenario_id: str
    emitted_at_utc: str
    oracle_pack_ref: OraclePackRef | None = None


class ControlAttributes(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["READY", "READY_REEMIT"]
    run_id: str


class ControlMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The record body on `sr-control-bus` (§6). No top-level `platform_run_id`: the runtime's run gate
    therefore hands every control record to WSP, which scopes and counts READYs itself."""

    topic: str = CONTROL_TOPIC
    message_id: str
    published_at_utc: str
    attributes: ControlAttributes
    partition_key: str
    payload: ReadyPayload


_encoder: Final = msgspec.json.Encoder()
_control_decoder: Final = msgspec.json.Decoder(ControlMessage)


def encode_message(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def decode_control_message(data: bytes) -> ControlMessage:
    """Decode a control-bus record; raises `msgspec.DecodeError`/`ValidationError` on anything else."""
    return _control_decoder.decode(data)
