"""Per-event admission checks, pure and in-memory: envelope, class pins, schema policy, partition key.

`evaluate` turns one raw JSON event into either an `Admissible` (ready to claim and publish) or a
`Rejected` (quarantine with a reason code). It never raises for bad input: anything unexpected is
`INTERNAL_ERROR`, so a producer always gets a decision and a receipt, never a 500.

Limits that exist below IG, enforced here so that an admitted event can always be stored and
published (each check is O(1) on data the decode produced anyway):
  * `event_id` holding U+0000: Postgres text cannot store it -> ENVELOPE_INVALID;
  * a Kinesis record (compact envelope + partition key) over 1 MiB -> EVENT_TOO_LARGE;
  * nesting deeper than the decoder follows (msgspec stops at Python's recursion limit, ~1,000
    levels less the caller's stack) -> NESTING_TOO_DEEP.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from fraudrt.contracts import (
    Envelope,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    ig_dedupe_key,
    ig_quarantine_id,
    ig_quarantine_key,
    ig_receipt_id,
    is_platform_run_id,
    partition_key,
    payload_hash,
)

from ._policy import KNOWN_PINS, Policy, TypeRule

ENVELOPE_INVALID: Final = "ENVELOPE_INVALID"
PINS_MISSING: Final = "PINS_MISSING"
SCHEMA_POLICY_MISSING: Final = "SCHEMA_POLICY_MISSING"
SCHEMA_VERSION_REQUIRED: Final = "SCHEMA_VERSION_REQUIRED"
SCHEMA_VERSION_NOT_ALLOWED: Final = "SCHEMA_VERSION_NOT_ALLOWED"
SCHEMA_FAIL: Final = "SCHEMA_FAIL"
PAYLOAD_HASH_MISMATCH: Final = "PAYLOAD_HASH_MISMATCH"
PARTITION_KEY_MISSING: Final = "PARTITION_KEY_MISSING"
EVENT_TOO_LARGE: Final = "EVENT_TOO_LARGE"
NESTING_TOO_DEEP: Final = "NESTING_TOO_DEEP"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"

REASON_CODES: Final = (ENVELOPE_INVALID, PINS_MISSING, SCHEMA_POLICY_MISSING, SCHEMA_VERSION_REQUIRED,
                       SCHEMA_VERSION_NOT_ALLOWED, SCHEMA_FAIL, PAYLOAD_HASH_MISMATCH, PARTITION_KEY_MISSING,
                       EVENT_TOO_LARGE, NESTING_TOO_DEEP, INTERNAL_ERROR)

# Kinesis' limit on one record: the data blob plus its partition key.
MAX_RECORD_BYTES: Final = 1024 * 1024

# Envelope keys a quarantine record keeps (scalars only; `payload` never).
_KEPT_KEYS: Final = frozenset({"event_id", "event_type", "schema_version", "ts_utc", "producer", "parent_event_id",
                               "trace_id", "span_id", "emitted_at_utc"}) | KNOWN_PINS
_MAX_KEPT_CHARS: Final = 256


class Admissible(msgspec.Struct, frozen=True):
    index: int
    env: Envelope
    data: bytes  # the compact envelope: the Kinesis record body
    rule: TypeRule
    platform_run_id: str
    dedupe_key: str
    payload_hash: str
    partition_key: str


class Rejected(msgspec.Struct, frozen=True):
    index: int
    reason: str
    detail: str
    platform_run_id: str
    event_id: str | None
    event_type: str | None
    event_class: str | None
    kept: dict[str, Any]
    dropped: tuple[str, ...]
    raw_sha256: str
    quarantine_id: str
    receipt_id: str
    payload_hash: str | None = None
    dedupe_key: str | None = None


def quarantine_ids(platform_run_id: str, event_key: str, reason: str, content_hash: str) -> tuple[str, str]:
    """(quarantine_id, receipt_id) for one quarantine decision (recipe: `contracts.ig_quarantine_key`)."""
    key = ig_quarantine_key(platform_run_id, event_key, reason, content_hash)
    return ig_quarantine_id(key), ig_receipt_id("QUARANTINE", key)


def _kept_fields(doc: Any) -> tuple[dict[str, Any], tuple[str, ...]]:
    if not isinstance(doc, dict):
        return {}, ()
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in doc.items():
        if key in _KEPT_KEYS and (value is None or isinstance(value, str | int | float | bool)):
            kept[key] = value[:_MAX_KEPT_CHARS] if isinstance(value, str) else value
        else:
            dropped.append(str(key)[:_MAX_KEPT_CHARS])
    return kept, tuple(sorted(dropped))


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def reject(index: int, raw: bytes, reason: str, detail: str, policy: Policy, fallback_run: str, *,
           doc: Any = msgspec.UNSET, payload_hash_hex: str | None = None) -> Rejected:
    """A quarantine decision for `raw`; reads what it can of the envelope for the record and the ids."""
    if doc is msgspec.UNSET:
        try:
            doc = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            doc = None
    kept, dropped = _kept_fields(doc)
    run = kept.get("platform_run_id")
    platform_run_id: str = run if isinstance(run, str) and is_platform_run_id(run) else fallback_run
    event_id = _str_or_none(kept.get("event_id"))
    event_type = _str_or_none(kept.get("event_type"))
    rule = policy.rules.get(event_type) if event_type else None
    raw_sha = hashlib.sha256(raw).hexdigest()
    qid, rid = quarantine_ids(platform_run_id, event_id or f"raw:{raw_sha}", reason, payload_hash_hex or raw_sha)
    dedupe = ig_dedupe_key(platform_run_id, rule.event_class, event_id) if rule and event_id else None
    return Rejected(index=index, reason=reason, detail=detail[:1000], platform_run_id=platform_run_id,
                    event_id=event_id, event_type=event_type, event_class=rule.event_class if rule else None,
                    kept=kept, dropped=dropped, raw_sha256=raw_sha, quarantine_id=qid, receipt_id=rid,
                    payload_hash=payload_hash_hex, dedupe_key=dedupe)


def _lookup(env: Envelope, path: tuple[str, ...]) -> Any:
    root = path[0]
    node: Any = env.payload if root == "payload" else getattr(env, root, None)
    for part in path[1:]:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _check_payload(rule: TypeRule, payload: dict[str, Any]) -> str | None:
    for f in rule.fields:
        if f.name not in payload:
            if f.required:
                return f"payload.{f.name} is required"
            continue
        value = payload[f.name]
        if not isinstance(value, f.types) or (isinstance(value, bool) and not f.allows_bool):
            return f"payload.{f.name} must be {f.type_names}, got {type(value).__name__}"
    if not rule.additional_properties:
        extra = set(payload) - rule.field_names
        if extra:
            return f"payload has fields not in the schema: {sorted(extra)[:5]}"
    return None


def _evaluate(index: int, raw: bytes, policy: Policy, fallback_run: str) -> Admissible | Rejected:
    try:
        env = decode_envelope(raw)
    except EnvelopeError as exc:
        return reject(index, raw, ENVELOPE_INVALID, str(exc), policy, fallback_run)
    if "\x00" in env.event_id:
        return reject(index, raw, ENVELOPE_INVALID, "envelope field 'event_id': must not contain U+0000 (NUL)",
                      policy, fallback_run)
    rule = policy.rules.get(env.event_type)
    if rule is None:
        return reject(index, raw, SCHEMA_POLICY_MISSING, f"no schema policy for event_type {env.event_type!r}",
                      policy, fallback_run)
    missing = [p for p in rule.required_pins if getattr(env, p) in (None, "")]
    if missing:
        return reject(index, raw, PINS_MISSING, f"class {rule.event_class} requires pins {missing}",
                      policy, fallback_run)
    if env.schema_version is None:
        if rule.version_required:
            return reject(index, raw, SCHEMA_VERSION_REQUIRED, f"{env.event_type} requires schema_version",
                          policy, fallback_run)
    elif env.schema_version not in rule.allowed_versions:
        return reject(index, raw, SCHEMA_VERSION_NOT_ALLOWED,
                      f"{env.event_type} schema_version {env.schema_version!r} not in "
                      f"{sorted(rule.allowed_versions)}", policy, fallback_run)
    problem = _check_payload(rule, env.payload)
    if problem is not None:
        return reject(index, raw, SCHEMA_FAIL, problem, policy, fallback_run)
    key_value: Any = None
    for path in rule.route.key_paths:
        value = _lookup(env, path)
        if value not in (None, "") and not isinstance(value, dict | list):
            key_value = value
            break
    if key_value is None:
        return reject(index, raw, PARTITION_KEY_MISSING,
                      f"none of {['.'.join(p) for p in rule.route.key_paths]} is set", policy, fallback_run)
    run = env.platform_run_id
    assert run is not None  # every class requires platform_run_id (checked when the policy loads)
    data = encode_envelope(env)
    key = partition_key(key_value)
    if len(data) + len(key) > MAX_RECORD_BYTES:
        return reject(index, raw, EVENT_TOO_LARGE,
                      f"the Kinesis record would be {len(data) + len(key)} bytes (envelope and partition key); "
                      f"the limit is {MAX_RECORD_BYTES}", policy, fallback_run)
    return Admissible(
        index=index, env=env, data=data, rule=rule, platform_run_id=run,
        dedupe_key=ig_dedupe_key(run, rule.event_class, env.event_id),
        payload_hash=payload_hash(env.event_type, env.schema_version, env.payload),
        partition_key=key,
    )


def evaluate(index: int, raw: bytes, policy: Policy, fallback_run: str) -> Admissible | Rejected:
    """Admissible or Rejected for one raw event; `fallback_run` prefixes evidence of run-less input."""
    try:
        return _evaluate(index, raw, policy, fallback_run)
    except RecursionError:
        # Too deep to decode at all: nothing of it can be read back for the record (doc=None).
        return reject(index, raw, NESTING_TOO_DEEP, "JSON nested deeper than the decoder follows", policy,
                      fallback_run, doc=None)
    except Exception as exc:  # a bug in a check must cost one event a quarantine, not the batch a 500
        detail = f"{type(exc).__name__}: {exc}"
        try:
            return reject(index, raw, INTERNAL_ERROR, detail, policy, fallback_run)
        except Exception:  # not even the envelope's scalars can be read back
            return reject(index, raw, INTERNAL_ERROR, detail, policy, fallback_run, doc=None)
