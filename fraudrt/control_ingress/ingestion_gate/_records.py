"""IG's messages: receipts, quarantine records, eb_refs, HTTP results (control_ingress §8.6, §8.7).

Optional fields are omitted when unset (`omit_defaults`), so every field that must always appear
has no default.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Decision = Literal["ADMIT", "DUPLICATE", "QUARANTINE"]

ZERO_FINGERPRINT = "0" * 64



class EbRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Where an admitted event sits on the bus: stream, shard number, Kinesis sequence number."""

    topic: str
    partition: int
    offset: str
    offset_kind: Literal["kinesis_sequence"]
    published_at_utc: str | None = None


class PayloadHash(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    algo: Literal["sha256"]
    hex: str


class PolicyRevRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    policy_id: str
    revision: str
    content_digest: str


class Actor(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Who pushed. `principal` is a key fingerprint, never the key itself (critique §13.3 #24)."""

    actor_id: str
    source_type: Literal["SYSTEM", "HUMAN"]
    auth_mode: str
    principal: str


class Provenance(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    service_release_id: str
    environment: str
    config_revision: str | None = None
    run_config_digest: str | None = None


class EvidenceRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    kind: str
    ref: str
    digest: str | None = None


class Receipt(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    receipt_id: str
    decision: Decision
    event_id: str | None = None
    event_type: str | None = None
    event_class: str | None = None
    ts_utc: str | None = None
    manifest_fingerprint: str
    platform_run_id: str
    run_config_digest: str
    policy_rev: PolicyRevRef
    dedupe_key: str | None = None
    pins: dict[str, Any] = msgspec.field(default_factory=dict)
    scenario_run_id: str | None = None
    payload_hash: PayloadHash | None = None
    admitted_at_utc: str | None = None
    eb_ref: EbRef | None = None
    partitioning_profile_id: str | None = None
    partition_key: str | None = None
    evidence_refs: list[EvidenceRef] = msgspec.field(default_factory=list)
    reason_codes: list[str] = msgspec.field(default_factory=list)
    schema_version: str | None = None
    producer: str | None = None
    actor: Actor | None = None
    service_release_id: str
    environment: str
    provenance: Provenance


class QuarantineRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """`ig/quarantine/<quarantine_id>.json`: the envelope minus its payload, and why."""

    quarantine_id: str
    received_at_utc: str
    decision: Literal["QUARANTINE"]
    reason_codes: list[str]
    detail: str
    manifest_fingerprint: str
    platform_run_id: str
    pins: dict[str, Any] = msgspec.field(default_factory=dict)
    policy_rev: PolicyRevRef
    # Only known envelope keys with scalar values (strings cut to 256 chars); never `payload`.
    envelope: dict[str, Any] = msgspec.field(default_factory=dict)
    # Keys that were present but not kept (unknown fields, `payload`): names only.
    dropped_fields: list[str] = msgspec.field(default_factory=list)
    raw_sha256: str | None = None
    actor: Actor | None = None
    service_release_id: str
    environment: str
    provenance: Provenance


class ReceiptBatch(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """`ig/receipts/batches/<batch_id>.json` (receipts_layout: batch)."""

    batch_id: str
    platform_run_id: str
    created_at_utc: str
    receipts: list[Receipt]


class EventResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """One entry of a batch push's `results`."""

    index: int
    decision: Decision
    receipt_id: str
    receipt_ref: str
    event_id: str | None = None
    reason_codes: list[str] = msgspec.field(default_factory=list)
    eb_ref: EbRef | None = None


class BatchResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    results: list[EventResult]
    admit: int
    duplicate: int
    quarantine: int


class SingleResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """A single-envelope push answers like the reference: decision, receipt, receipt_ref."""

    decision: Decision
    receipt: Receipt
    receipt_ref: str


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    error: str
    detail: str | None = None
