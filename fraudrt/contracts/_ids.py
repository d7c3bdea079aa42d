"""Every deterministic id and digest recipe of the platform, in one place.

Ids are sha256 lowercase hex over a recipe name and the inputs that define the thing, so a replay
yields the same ids. Recipes carried over from the reference keep its exact strings (a changed
separator or JSON spacing changes every hash); recipes marked *new* are ours and use
``derive_id``. Two JSON canonicalisations exist and are NOT interchangeable:

- ``canon_compact``: ``json.dumps(sort_keys=True, ensure_ascii=True, separators=(",", ":"))``
- ``canon_default``: the same with json's default ``", "`` / ``": "`` separators (SR only).

Notation: ``S(s)`` = sha256 of the UTF-8 string; ``H(x)`` = ``S(canon_compact(x))``;
``R(name, p)`` = ``H({"recipe": name, "payload": p})``; ``D(x)`` = ``S(canon_default(x))``;
``[:n]`` = first n hex chars; ``pin_scope`` = the six pins stringified (``""`` if absent).

=================================  =====================================================================  ===
function                           recipe                                                                 len
=================================  =====================================================================  ===
Scenario Runner / control bus
scenario_run_id                    ``S("sr_run|" + run_equivalence_key)[:32]``                            32
sr_attempt_id                      ``S("sr_attempt|{run_id}|{attempt_no}")[:32]``                         32
scenario_set_id                    ``"scnset_" + S("|".join(sorted(set(scenario_set))))[:16]``            -
sr_intent_fingerprint              ``D({manifest_fingerprint, parameter_hash, seed, scenario_id,          64
                                   scenario_set, window_start_utc, window_end_utc, window_tz})``
sr_plan_hash                       ``D(plan minus "plan_hash")``                                          64
sr_bundle_hash                     ``H({locators, receipts, instance_receipts, policy_rev})`` sorted      64
sr_record_event_id                 ``D({event_kind, run_id, details})``                                   64
ready_message_id                   ``S("ready|{platform_run_id}|{scenario_run_id}|{bundle_or_plan}")``    64
terminal_reemit_key                ``S("terminal|{run_id}|{state}|" + D(status))``                        64
Oracle store / WSP
oracle_pack_id                     ``S("{mf}|{ph}|{scenario_id}|{seed}|{release}|{cat}|{gates}")``        64
stream_view_id                     ``H({engine_run_root, scenario_id, output_id, sort_keys,               64
                                   partition_granularity})``
source_locator_digest              ``S("\\n".join(sorted(uris)))``                                        64
engine_event_id                    ``S("|".join([output_id, *pk values, *present world pins]))``          64
wsp_fallback_pack_key              ``S(engine_run_root)``                                                 64
wsp_checkpoint_scope_key           ``S("|".join([pack_key, prid, srid, lane_count, lane_index,            64
                                   attempt_id]))``
wsp_lane_index                     ``int(sha256(event_id)[:8 bytes], big) % lane_count``                  -
Ingestion Gate
ig_dedupe_key                      ``S("{platform_run_id}:{event_class}:{event_id}")``                    64
ig_receipt_id                      ``S("{decision}:{event_id}")[:32]``                                    32
ig_quarantine_id                   ``S("QUARANTINE:{event_id}")[:32]``                                    32
ig_quarantine_key                  *new* ``"{prid}:{event_id or 'raw:'+S(raw)}:{reason}:{content hash}"``  -
                                   (fed to ig_quarantine_id / ig_receipt_id for a quarantine decision)
payload_hash                       ``H({event_type, schema_version, payload})`` (also RTDL semantic)      64
partition_key                      ``S(str(value))``                                                      64
ig_policy_digest                   ``H(sorted [{path, content: canon_compact(doc)}])``                    64
governance_event_id                ``S("{FAMILY}|{prid}|{srid or ''}|{component}|{dedupe_key or           64
                                   canon_compact(details)}")``
archive_payload_hash               ``S(json compact of the whole envelope, default=str)``                 64
config_digest (new)                ``R("platform.config_digest.v1", resolved settings minus credentials)``  64
RTDL (rtdl.md §11)
pin_scope                          the six pins as strings
decision_id (new, used)            ``R("df.decision_id.v3", {platform_run_id, source_event_id,            32
                                   decision_scope})[:32]`` (no posture or bundle in it: rtdl §7.7)
df_decision_id                     ``R("df.decision_id.v2", {source_event_id, platform_run_id,            32
                                   decision_scope, bundle_ref, origin_offset})[:32]``
decision_response_event_id         ``R("df.decision_response.event_id.v1", {source_event_id,             64
                                   decision_scope, pin_scope})``
action_intent_event_id             ``R("df.action_intent.event_id.v1", {source_event_id, action_domain,   64
                                   pin_scope})``
action_idempotency_key             ``R("df.action_intent.idempotency_key.v1", same payload)``             64
action_id                          ``S("{decision_id}:{action_kind}")[:32]``                              32
df_checkpoint_token_id             ``S("{source_event_id}:{decision_id}")[:32]``                          32
df_decision_content_digest (new)   ``R("df.decision_content.v1", decision payload without its             32
                                   run-specific fields)[:32]`` (``DECISION_RUN_SPECIFIC_FIELDS``: times,
                                   bus position, posture seq, OFP progress): same world, same digest
df_feature_snapshot_digest (new)   ``S("df.feature_snapshot.v1|" + "|".join(name=repr(value)), inputs     32
                                   sorted by name)[:32]``: the inputs a decision saw
df_ofp_request_id                  ``"df_ofp_" + H({source_event_id, source_event_type,                   -
                                   source_eb_ref})[:16]``
al_semantic_key                    ``H({platform_run_id, scenario_run_id, idempotency_key})``             64
al_outcome_id                      ``H({decision_id, action_id, idempotency_key, terminal_state,          32
                                   reason_code, final_attempt_seq})[:32]``
al_denied_outcome_id               ``H({decision_id, action_id, idempotency_key, status: "DENIED",        32
                                   authz_policy_rev, reason})[:32]``
action_outcome_id (new, used)      ``R("al.outcome_id.v2", {decision_id, action_id, idempotency_key})      32
                                   [:32]`` (one outcome per intent, whatever the result)
al_checkpoint_token_id             ``S("{outcome_id}:{action_id}:{decision_id}")[:32]``                   32
dl_posture_event_id                ``S("{scope_key}|{posture_seq}")``                                     64
dl_governance_event_id             ``H({event_type, scope_key, ts_utc, policy_rev, payload})``            64
ieg_dedupe_key                     = ig_dedupe_key                                                        64
ieg_entity_id                      ``S("{etype}:{itype}:{ivalue}:{prid}|{mf}|{ph}|{seed}|{sid}|{srid}|    64
                                   {run_id}")``
ieg_failure_id                     ``S("{topic}:{partition}:{offset}:{reason}:{event_id}")[:32]``         32
ieg_graph_version_id               ``H({stream_id, topics: {t: {partitions: {"p": {next_offset,           32
                                   offset_kind}}}}})[:32]`` (reference emits 64; contract says 32)
ieg_graph_as_of_version (new)      ``derive_id("ieg.graph_version.v1", platform_run_id,                32
                                   definition_digest, as_of_ts_utc)``
ieg_graph_as_of_versions (new)     the same recipe over many as-of times of one run                    32
csfb_failure_id                    ``S("{stream_id}:{prid}:{srid}:{topic}:{partition}:{offset}:           32
                                   {event_id}:{reason}:{canon_compact(details)}")[:32]``
csfb_binding_payload_hash          ``H({flow_id, join_frame_key, source_event_id})``                      64
ofp_basis_digest                   ``H({stream, offset_kind, offsets: [{topic, partition, offset}]})``    64
ofp_snapshot_hash                  ``H({pins, as_of_time_utc, feature_groups(sorted), ...})``             64
ofp_definitions_digest (new)       ``R("ofp.feature_definitions.v1", definitions document)``              64
ofp_vector_digest (new)            ``S("ofp.vector.v1|{defs}|{prid}|{flow_id}|{ts_utc}|" + values as      32
                                   little-endian int64 bytes)[:32]``
dla_quarantine_id                  ``S("{topic}|{partition}|{offset}|{offset_kind}|{reason}|{eid}")``     32
dla_audit_id (new)                 ``derive_id("dla.audit_id.v1", prid, event_type, event_id)``           32
audit_chain_id (new, used)         ``derive_id("dla.audit_chain_id.v1", prid, decision_id)`` (one audit   32
                                   record per decision chain)
audit_record_event_id (new, used)  RESOLVED: ``audit_chain_id``; UNRESOLVED: ``derive_id(                32
                                   "dla.audit_record.unresolved.v1", audit_id)`` (a chain publishes at
                                   most these two: unresolved at its grace period, resolved when whole)
dla_intake_attempt_id (new)        ``derive_id("dla.intake_attempt_id.v1", stream_id, topic,              32
                                   partition, offset_kind, offset)``
Case + labels (case_operate_obs.md §1.3)
case_id                            ``R("cm.case_id.v1", {platform_run_id, event_class, event_id})``       32
case_trigger_id                    ``R("cm.case_trigger_id.v1", {case_id, trigger_type, source_ref_id})`` 32
case_timeline_event_id             ``R("cm.case_timeline_event_id.v1", {case_id, timeline_event_type,     32
                                   source_ref_id})``
case_trigger_payload_hash          ``R("cm.case_trigger_payload_hash.v1", {...})``                        64
case_timeline_payload_hash         ``R("cm.case_timeline_payload_hash.v1", {...})``                       64
label_assertion_id                 ``R("ls.label_assertion_id.v1", {case_timeline_event_id,               32
                                   label_subject_key, label_type})``
label_assertion_payload_hash       ``R("ls.label_assertion_payload_hash.v1", {...})``                     64
ls_adapter_case_timeline_event_id  ``R("ls.adapter.case_timeline_event_id.v1", {writer_namespace,         32
                                   source_ref_id, label_subject_key, label_type})``
ct_checkpoint_token_id             ``S("{source_ref_id}:{case_trigger_id}")[:32]``                        32
cm_evidence_request_id             ``S("{case_id}:{timeline_event_id}:{REF_TYPE}:{ref_id}")[:32]``        32
cm_action_idempotency_key          ``R("cm.action_intent.idempotency_key.v1", {case_id,                   64
                                   source_case_event_id, action_kind, target_ref})``
cm_action_id                       ``R("cm.action_intent.action_id.v1", {case_id, source_case_event_id,   32
                                   action_idempotency_key})``
cm_manual_decision_id              ``R("cm.action_intent.decision_id.v1", {seed: "{case}:{sce}:{kind}"})``32
cm_run_config_digest               ``R("cm.action_intent.run_config_digest.v1", six pins, seed int)``     64
lifecycle_event_id                 ``S("{platform_run_id}|{ref_id}|{lifecycle_type}")``                   64
Generic
recipe_hash                        ``R(recipe, payload)``                                                 64
derive_id                          ``S("{recipe}|" + "|".join(parts))[:length]``                          n
=================================  =====================================================================  ===
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Final, Literal

import msgspec

# --------------------------------------------------------------------------------------------------
# Primitives
# --------------------------------------------------------------------------------------------------


class IdRecipeError(ValueError):
    """An id cannot be derived from the inputs given; ``reason_code`` is the platform's code."""

    reason_code: ClassVar[str] = "ID_RECIPE_INVALID"


class PrimaryKeyMissing(IdRecipeError):
    """An engine row lacks (or has null in) a catalogue primary-key column."""

    reason_code: ClassVar[str] = "PRIMARY_KEY_MISSING"

    def __init__(self, output_id: str, column: str) -> None:
        super().__init__(
            f"PRIMARY_KEY_MISSING: {output_id} row has no value for primary-key column {column!r}"
        )
        self.output_id = output_id
        self.column = column


_CANON_STDLIB: Final = json.JSONEncoder(sort_keys=True, ensure_ascii=True, separators=(",", ":"))
_CANON_FAST: Final = msgspec.json.Encoder(order="sorted")
# Floats msgspec writes exactly as ``float.__repr__`` does (msgspec writes 1e-5 as 0.00001 and 1e16
# as 1e16, repr as 1e-05 and 1e+16). Zero is fine too.
_FAST_FLOAT_MIN: Final = 1e-4
_FAST_FLOAT_MAX: Final = 1e16
_STR_ONLY: Final = {str}


def _fast_canon_ok(obj: Any) -> bool:
    """True if msgspec's sorted encoding of ``obj`` is byte-identical to the stdlib form (ASCII aside).

    Holds when every value is a plain str/int/bool/None, a float whose repr has no exponent, or a
    list/dict (str keys) of those: exactly what JSON decoding produces for ordinary payloads.
    Subclasses (enums), tuples, bytes, NaN and the like take the stdlib path. Iterative and inlined
    because it runs once per admitted event.
    """
    todo = [obj]
    while todo:
        node = todo.pop()
        t = type(node)
        if t is dict:
            if node and set(map(type, node)) != _STR_ONLY:
                return False
            values = node.values()
        elif t is list:
            values = node
        else:
            values = (node,)
        for v in values:
            tv = type(v)
            if tv is str or tv is int or tv is bool or v is None:
                continue
            if tv is float:
                if v != 0.0 and not (_FAST_FLOAT_MIN <= abs(v) < _FAST_FLOAT_MAX):
                    return False
            elif tv is dict or tv is list:
                if len(todo) > 64:
                    return False
                todo.append(v)
            else:
                return False
    return True


def canon_compact(obj: Any) -> bytes:
    """``json.dumps(obj, sort_keys=True, ensure_ascii=True, separators=(",", ":"))`` as ASCII bytes.

    The stdlib form defines the bytes: msgspec spells some floats differently (``1e16`` vs
    ``1e+16``) and does not escape non-ASCII or DEL, either of which would change reference hashes.
    msgspec is used only where it provably writes the same bytes (``_fast_canon_ok``, and an ASCII
    result without DEL), ~4x faster: IG hashes every payload with this (``payload_hash``).
    ``tests/unit/test_contracts_ids.py`` checks the two paths agree on arbitrary JSON values.
    """
    if _fast_canon_ok(obj):
        out = _CANON_FAST.encode(obj)
        if out.isascii() and b"\x7f" not in out:
            return out
    return _CANON_STDLIB.encode(obj).encode("ascii")


def canon_default(obj: Any) -> bytes:
    """``json.dumps(obj, sort_keys=True, ensure_ascii=True)`` (spaces after ``,`` and ``:``).

    Only the SR recipes use this form; using it anywhere else changes the hash.
    """
    return json.dumps(obj, sort_keys=True, ensure_ascii=True).encode("ascii")


def sha256_hex(data: bytes | str) -> str:
    """Lowercase hex sha256 of bytes, or of a string's UTF-8 encoding."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def _h(obj: Any) -> str:
    return hashlib.sha256(canon_compact(obj)).hexdigest()


def recipe_hash(recipe: str, payload: Any) -> str:
    """``sha256(canon_compact({"recipe": recipe, "payload": payload}))``, 64 hex (the RTDL/CM form)."""
    return _h({"recipe": recipe, "payload": payload})


def derive_id(recipe: str, *parts: str | int, length: Literal[32, 64] = 32) -> str:
    """``sha256("<recipe>|" + "|".join(parts))[:length]`` — the form for every *new* recipe.

    A part containing ``|`` is refused: ``("a|b", "c")`` and ``("a", "b|c")`` would otherwise hash
    alike. Hash free text first (``sha256_hex``) if it must be an input. Ints are written in
    decimal; bools are refused (``True`` vs ``1`` is too easy to mix up).
    """
    if length not in (32, 64):
        raise IdRecipeError(f"derive_id length must be 32 or 64, not {length!r}")
    if not recipe or "|" in recipe:
        raise IdRecipeError(f"derive_id recipe must be non-empty and free of '|': {recipe!r}")
    texts: list[str] = [recipe]
    for part in parts:
        if isinstance(part, bool) or not isinstance(part, str | int):
            raise IdRecipeError(f"derive_id part must be str or int, not {type(part).__name__}")
        text = str(part)
        if "|" in text:
            raise IdRecipeError(f"derive_id part contains '|': {text!r}")
        texts.append(text)
    return sha256_hex("|".join(texts))[:length]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# --------------------------------------------------------------------------------------------------
# Scenario Runner and control bus (control_ingress §2)
# --------------------------------------------------------------------------------------------------


def scenario_run_id(run_equivalence_key: str) -> str:
    """SR ``run_id`` (= ``scenario_run_id``): ``sha256("sr_run|" + run_equivalence_key)[:32]``."""
    if not run_equivalence_key:
        raise IdRecipeError("run_equivalence_key must be non-empty")
    return sha256_hex("sr_run|" + run_equivalence_key)[:32]


def sr_attempt_id(run_id: str, attempt_no: int) -> str:
    """SR engine ``attempt_id``: ``sha256("sr_attempt|{run_id}|{attempt_no}")[:32]``."""
    return sha256_hex(f"sr_attempt|{run_id}|{attempt_no}")[:32]


def scenario_set_id(scenario_set: Iterable[str]) -> str:
    """Canonical id of a scenario set: ``"scnset_" + sha256("|".join(sorted(set(s))))[:16]``."""
    return "scnset_" + sha256_hex("|".join(sorted(set(scenario_set))))[:16]


def sr_intent_fingerprint(
    *,
    manifest_fingerprint: str,
    parameter_hash: str,
    seed: int,
    scenario_id: str | None,
    scenario_set: Sequence[str] | None,
    window_start_utc: datetime,
    window_end_utc: datetime,
    window_tz: str,
) -> str:
    """SR intent fingerprint (``EQUIV_KEY_COLLISION`` guard): ``canon_default`` of the intent.

    Windows are written with ``datetime.isoformat()`` (``+00:00``), as in the reference.
    """
    return sha256_hex(
        canon_default(
            {
                "manifest_fingerprint": manifest_fingerprint,
                "parameter_hash": parameter_hash,
                "seed": seed,
                "scenario_id": scenario_id,
                "scenario_set": None if scenario_set is None else list(scenario_set),
                "window_start_utc": window_start_utc.isoformat(),
                "window_end_utc": window_end_utc.isoformat(),
                "window_tz": window_tz,
            }
        )
    )


def sr_plan_hash(plan: Mapping[str, Any]) -> str:
    """SR ``plan_hash``: ``sha256(canon_default(plan without "plan_hash"))``.

    Everything in the plan is hashed, timestamps included: keep the plan timestamp-free if a
    re-submit must reproduce it (control_ingress §13.2 #15).
    """
    return sha256_hex(canon_default({k: v for k, v in plan.items() if k != "plan_hash"}))


def sr_bundle_hash(
    *,
    locators: Iterable[Mapping[str, Any]],
    gate_receipts: Iterable[Mapping[str, Any]],
    instance_receipts: Iterable[Mapping[str, Any]],
    policy_rev: Mapping[str, Any],
) -> str:
    """SR evidence ``bundle_hash``: ``H({locators by output_id, receipts by gate_id,
    instance_receipts by output_id, policy_rev})``; sorting makes it independent of discovery order."""
    return _h(
        {
            "locators": sorted(locators, key=lambda x: str(x["output_id"])),
            "receipts": sorted(gate_receipts, key=lambda x: str(x["gate_id"])),
            "instance_receipts": sorted(instance_receipts, key=lambda x: str(x["output_id"])),
            "policy_rev": dict(policy_rev),
        }
    )


def sr_record_event_id(event_kind: str, run_id: str, details: Mapping[str, Any]) -> str:
    """SR ledger record ``event_id``: ``D({event_kind, run_id, details})``; no timestamp, so a
    repeated record dedupes."""
    return sha256_hex(canon_default({"event_kind": event_kind, "run_id": run_id, "details": details}))


def ready_message_id(platform_run_id: str, scenario_run_id: str, bundle_or_plan_hash: str) -> str:
    """READY ``message_id``: ``sha256("ready|{platform_run_id}|{scenario_run_id}|{hash}")``.

    ``bundle_or_plan_hash`` is the bundle hash, or the plan hash when there is none. A re-emit into
    the same platform run reuses the id, so WSP sees it as a duplicate.
    """
    return sha256_hex(f"ready|{platform_run_id}|{scenario_run_id}|{bundle_or_plan_hash}")


def terminal_reemit_key(run_id: str, state: str, status: Mapping[str, Any]) -> str:
    """Terminal re-emit key: ``sha256("terminal|{run_id}|{state}|" + sha256(canon_default(status)))``."""
    return sha256_hex(f"terminal|{run_id}|{state}|{sha256_hex(canon_default(status))}")


# --------------------------------------------------------------------------------------------------
# Oracle store and WSP (control_ingress §2, §4, §7)
# --------------------------------------------------------------------------------------------------

DEFAULT_STREAM_VIEW_SORT_KEYS: Final[tuple[str, ...]] = ("ts_utc", "filename", "file_row_number")
_ENGINE_PIN_KEYS: Final[tuple[str, ...]] = ("manifest_fingerprint", "parameter_hash", "seed", "scenario_id")


def oracle_pack_id(
    *,
    manifest_fingerprint: str,
    parameter_hash: str,
    scenario_id: str,
    seed: int,
    engine_release: str,
    catalogue_digest: str,
    gate_map_digest: str,
) -> str:
    """``oracle_pack_id``: ``sha256("{mf}|{ph}|{scenario_id}|{seed}|{engine_release}|{catalogue_digest}|
    {gate_map_digest}")``; the digests are sha256 of the raw catalogue and gate-map file bytes."""
    return sha256_hex(
        f"{manifest_fingerprint}|{parameter_hash}|{scenario_id}|{seed}|{engine_release}"
        f"|{catalogue_digest}|{gate_map_digest}"
    )


def stream_view_id(
    *,
    engine_run_root: str,
    scenario_id: str,
    output_id: str,
    sort_keys: Sequence[str] = DEFAULT_STREAM_VIEW_SORT_KEYS,
    partition_granularity: str = "flat",
) -> str:
    """``stream_view_id``: ``H({engine_run_root, scenario_id, output_id, sort_keys, partition_granularity})``.

    Binds to the exact engine-root URI string: moving the world changes the id.
    """
    return _h(
        {
            "engine_run_root": engine_run_root,
            "scenario_id": scenario_id,
            "output_id": output_id,
            "sort_keys": list(sort_keys),
            "partition_granularity": partition_granularity,
        }
    )


def source_locator_digest(uris: Iterable[str]) -> str:
    """Stream-sort ``source_locator_digest``: ``sha256("\\n".join(sorted(uris)))`` over the expanded
    source parquet URIs."""
    return sha256_hex("\n".join(sorted(uris)))


def engine_event_id(
    output_id: str, row: Mapping[str, Any], primary_key: Sequence[str], pins: Mapping[str, Any]
) -> str:
    """Engine event ``event_id``: ``sha256("|".join([output_id] + [str(row[k]) for k in primary_key]
    + [str(pins[k]) for k in (manifest_fingerprint, parameter_hash, seed, scenario_id) if present]))``.

    ``platform_run_id`` is deliberately not an input: the same world yields the same ids in every
    run (IG's dedupe key adds the run). A primary-key column that is absent *or null* raises
    ``PrimaryKeyMissing`` (the reference only checks absence; a null would hash as ``"None"``).
    """
    parts = [output_id]
    for column in primary_key:
        value = row.get(column)
        if value is None:
            raise PrimaryKeyMissing(output_id, column)
        parts.append(str(value))
    for key in _ENGINE_PIN_KEYS:
        value = pins.get(key)
        if value is not None:
            parts.append(str(value))
    return sha256_hex("|".join(parts))


def wsp_fallback_pack_key(engine_run_root: str) -> str:
    """WSP pack key when no oracle pack manifest exists: ``sha256(engine_run_root)``."""
    return sha256_hex(engine_run_root)


def wsp_checkpoint_scope_key(
    *,
    pack_key: str,
    platform_run_id: str,
    scenario_run_id: str,
    lane_count: int,
    lane_index: int,
    attempt_id: str = "",
) -> str:
    """WSP checkpoint scope: ``sha256("|".join([pack_key, platform_run_id, scenario_run_id,
    lane_count, lane_index, attempt_id]))``; a new run, lane layout or attempt restarts from zero."""
    return sha256_hex(
        "|".join([pack_key, platform_run_id, scenario_run_id, str(lane_count), str(lane_index), attempt_id])
    )


def wsp_lane_index(event_id: str, lane_count: int) -> int:
    """WSP lane of an event: ``int.from_bytes(sha256(event_id)[:8], "big") % lane_count``."""
    if lane_count < 1:
        raise IdRecipeError(f"lane_count must be >= 1, not {lane_count}")
    return int.from_bytes(hashlib.sha256(event_id.encode("utf-8")).digest()[:8], "big") % lane_count


# --------------------------------------------------------------------------------------------------
# Ingestion Gate (control_ingress §2, §8)
# --------------------------------------------------------------------------------------------------


def ig_dedupe_key(platform_run_id: str, event_class: str, event_id: str) -> str:
    """IG admission ``dedupe_key``: ``sha256("{platform_run_id}:{event_class}:{event_id}")`` (64)."""
    return sha256_hex(f"{platform_run_id}:{event_class}:{event_id}")


def ig_receipt_id(decision: str, event_id: str) -> str:
    """IG ``receipt_id``: ``sha256("{decision}:{event_id}")[:32]``, decision ADMIT|DUPLICATE|QUARANTINE.

    Not run- or reason-specific (reference critique §13.2 #11): store receipts keyed by
    (platform_run_id, receipt_id), never by receipt_id alone.
    """
    return sha256_hex(f"{decision}:{event_id}")[:32]


def ig_quarantine_id(event_id: str) -> str:
    """IG ``quarantine_id``: ``sha256("QUARANTINE:{event_id}")[:32]`` (same caveat as ``ig_receipt_id``)."""
    return sha256_hex(f"QUARANTINE:{event_id}")[:32]


def ig_quarantine_key(platform_run_id: str, event_key: str, reason: str, content_hash: str) -> str:
    """*new* The key IG feeds to ``ig_quarantine_id`` and ``ig_receipt_id("QUARANTINE", ...)``.

    ``<run>:<event_id>:<reason>:<content hash>`` rather than the bare event id: the reference's
    bare-id ids made a second quarantine of the same event (other reason, other payload, other run)
    silently keep the first record (critique §13.2 #11). The same bad input maps to the same key.
    ``event_key`` is the event id, or ``raw:<sha256 of the raw bytes>`` when there is none.
    """
    return f"{platform_run_id}:{event_key}:{reason}:{content_hash}"


def payload_hash(event_type: str, schema_version: str | None, payload: Any) -> str:
    """Semantic payload hash (IG, IEG, OFP, CSFB, DF, DLA):
    ``sha256(canon_compact({"event_type", "schema_version", "payload"}))``; pins and ts excluded.

    IG wraps it as ``{"algo": "sha256", "hex": <this>}`` in receipts.
    """
    return _h({"event_type": event_type, "schema_version": schema_version, "payload": payload})


def partition_key(value: Any) -> str:
    """IG Kinesis partition key: ``sha256(str(value))`` of the first non-empty key-precedence value."""
    return sha256_hex(str(value))


def ig_policy_digest(documents: Mapping[str, Any]) -> str:
    """IG policy ``content_digest``: ``H(sorted([{path, content: canon_compact(doc)}], by path))``.

    ``documents`` maps each policy file's relative path (part of the digest) to its parsed YAML.
    """
    entries = [
        {"path": path, "content": canon_compact(doc).decode("ascii")}
        for path, doc in sorted(documents.items())
    ]
    return _h(entries)


def governance_event_id(
    family: str,
    platform_run_id: str,
    scenario_run_id: str | None,
    source_component: str,
    *,
    dedupe_key: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Governance ``event_id``: ``sha256("{FAMILY}|{platform_run_id}|{scenario_run_id or ''}|
    {source_component}|{dedupe_key or canon_compact(details)}")``; family is upper-cased first."""
    if dedupe_key:
        tail = dedupe_key
    elif details is not None:
        tail = canon_compact(dict(details)).decode("ascii")
    else:
        raise IdRecipeError("governance_event_id needs a dedupe_key or details")
    return sha256_hex(f"{family.upper()}|{platform_run_id}|{scenario_run_id or ''}|{source_component}|{tail}")


_CREDENTIAL_KEYS: Final = frozenset({"access_key_id", "secret_access_key", "password", "api_key", "api_keys"})


def _without_credentials(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _without_credentials(v) for k, v in node.items() if k not in _CREDENTIAL_KEYS}
    if isinstance(node, list | tuple):
        return [_without_credentials(v) for v in node]
    if isinstance(node, str) and "://" in node and "@" in node:
        # A URL's password (a DSN's) is a credential too; the rest of the URL is configuration.
        scheme, _, rest = node.partition("://")
        userinfo, at, host = rest.rpartition("@")
        return f"{scheme}://{userinfo.partition(':')[0]}{at}{host}"
    return node


def config_digest(settings: Mapping[str, Any]) -> str:
    """*New*: digest of a component's resolved settings (``msgspec.to_builtins(settings)``), so
    conformance can tell whether every pack runs with the same configuration:
    ``R("platform.config_digest.v1", settings minus credentials)``. Access keys, secret keys,
    passwords and a URL's password are left out, so the digest reveals nothing about them (and
    rotating a credential is not a configuration drift)."""
    return recipe_hash("platform.config_digest.v1", _without_credentials(dict(settings)))


def archive_payload_hash(envelope: Mapping[str, Any]) -> str:
    """Archive writer hash of the *whole* envelope: compact canonical JSON with ``default=str``."""
    text = json.dumps(envelope, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
    return sha256_hex(text)


# --------------------------------------------------------------------------------------------------
# RTDL (rtdl.md §11)
# --------------------------------------------------------------------------------------------------

_PIN_SCOPE_KEYS: Final[tuple[str, ...]] = (
    "platform_run_id",
    "scenario_run_id",
    "manifest_fingerprint",
    "parameter_hash",
    "scenario_id",
    "seed",
)


def pin_scope(pins: Mapping[str, Any]) -> dict[str, str]:
    """The six pins as strings, ``""`` when absent: the ``pin_scope`` input of the DF recipes."""
    return {key: _text(pins.get(key)) for key in _PIN_SCOPE_KEYS}


def df_decision_id(
    *,
    source_event_id: str,
    platform_run_id: str,
    bundle_id: str,
    bundle_version: str,
    registry_ref: str | None,
    topic: str,
    partition: int,
    offset: str,
    offset_kind: str,
    decision_scope: str = "fraud.primary",
) -> str:
    """DF ``decision_id``: ``R("df.decision_id.v2", {source_event_id, platform_run_id, decision_scope,
    bundle_ref{bundle_id, bundle_version, registry_ref}, origin_offset{topic, partition, offset,
    offset_kind}})[:32]``.

    Depends on the bundle (hence on posture) while the decision event id does not (rtdl §7.7).
    """
    return recipe_hash(
        "df.decision_id.v2",
        {
            "source_event_id": source_event_id,
            "platform_run_id": platform_run_id,
            "decision_scope": decision_scope,
            "bundle_ref": {
                "bundle_id": bundle_id,
                "bundle_version": bundle_version,
                "registry_ref": registry_ref,
            },
            "origin_offset": {
                "topic": topic,
                "partition": int(partition),
                "offset": offset,
                "offset_kind": offset_kind,
            },
        },
    )[:32]


def decision_id(platform_run_id: str, source_event_id: str, decision_scope: str = "fraud.primary") -> str:
    """*New*, the decision id the platform uses: ``R("df.decision_id.v3", {platform_run_id,
    source_event_id, decision_scope})[:32]``. A replay of the source event under another posture or
    bundle is the same decision (the reference's v2 folded both in, rtdl §7.7)."""
    return recipe_hash("df.decision_id.v3", {"platform_run_id": platform_run_id, "source_event_id": source_event_id,
                                             "decision_scope": decision_scope})[:32]


def action_outcome_id(decision_id: str, action_id: str, idempotency_key: str) -> str:
    """*New*, the outcome id (and outcome envelope ``event_id``) the platform uses:
    ``R("al.outcome_id.v2", {decision_id, action_id, idempotency_key})[:32]``. It names the intent's one
    outcome whatever it turns out to be; the reference's recipe folded the terminal state and attempt
    in, so a re-execution could mint a second outcome for one intent."""
    return recipe_hash("al.outcome_id.v2", {"decision_id": decision_id, "action_id": action_id,
                                            "idempotency_key": idempotency_key})[:32]


def audit_chain_id(platform_run_id: str, decision_id: str) -> str:
    """*New*: the audit record of one decision chain, ``derive_id("dla.audit_chain_id.v1", prid, decision_id)``."""
    return derive_id("dla.audit_chain_id.v1", platform_run_id, decision_id)


def audit_record_event_id(audit_id: str, chain_status: str) -> str:
    """*New*: the envelope ``event_id`` of a chain's audit record. The RESOLVED record is the chain's
    ``audit_id`` itself; the UNRESOLVED one (its grace period ended first) is
    ``derive_id("dla.audit_record.unresolved.v1", audit_id)``, so a chain that resolves late publishes
    a second record under another id instead of a changed copy of the first."""
    if chain_status == "RESOLVED":
        return audit_id
    if chain_status == "UNRESOLVED":
        return derive_id("dla.audit_record.unresolved.v1", audit_id)
    raise IdRecipeError(f"audit_record_event_id: chain_status must be RESOLVED or UNRESOLVED, not {chain_status!r}")


def decision_response_event_id(
    source_event_id: str, pins: Mapping[str, Any], decision_scope: str = "fraud.primary"
) -> str:
    """``decision_response`` envelope ``event_id``: ``R("df.decision_response.event_id.v1",
    {source_event_id, decision_scope, pin_scope})`` (64)."""
    return recipe_hash(
        "df.decision_response.event_id.v1",
        {"source_event_id": source_event_id, "decision_scope": decision_scope, "pin_scope": pin_scope(pins)},
    )


def _intent_payload(source_event_id: str, action_kind: str, pins: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "source_event_id": source_event_id,
        "action_domain": action_kind.lower(),
        "pin_scope": pin_scope(pins),
    }


def action_intent_event_id(source_event_id: str, action_kind: str, pins: Mapping[str, Any]) -> str:
    """``action_intent`` envelope ``event_id``: ``R("df.action_intent.event_id.v1", {source_event_id,
    action_domain: lower(action_kind), pin_scope})`` (64)."""
    return recipe_hash("df.action_intent.event_id.v1", _intent_payload(source_event_id, action_kind, pins))


def action_idempotency_key(source_event_id: str, action_kind: str, pins: Mapping[str, Any]) -> str:
    """Intent ``idempotency_key``: ``R("df.action_intent.idempotency_key.v1", same payload as the
    intent event id)`` (64). Includes the action kind: a replay under another posture makes a new key."""
    return recipe_hash(
        "df.action_intent.idempotency_key.v1", _intent_payload(source_event_id, action_kind, pins)
    )


def action_id(decision_id: str, action_kind: str) -> str:
    """Intent ``action_id``: ``sha256("{decision_id}:{action_kind}")[:32]``."""
    return sha256_hex(f"{decision_id}:{action_kind}")[:32]


def df_checkpoint_token_id(source_event_id: str, decision_id: str) -> str:
    """DF checkpoint ``token_id``: ``sha256("{source_event_id}:{decision_id}")[:32]``."""
    return sha256_hex(f"{source_event_id}:{decision_id}")[:32]


# Decision payload fields that depend on when and where a decision was made, not on the world: the
# content digest leaves them out, so the same world decided twice (another replay, another stream)
# has the same digests. Paths are (field, subfield).
DECISION_RUN_SPECIFIC_FIELDS: Final[tuple[tuple[str, str | None], ...]] = (
    ("timings", None),
    ("source_event", "stream"),
    ("source_event", "shard_id"),
    ("source_event", "sequence_number"),
    ("posture", "posture_seq"),
    ("posture", "decided_at_utc"),
    ("features", "ofp_watermark_utc"),
)


def df_decision_content_digest(payload: Mapping[str, Any]) -> str:
    """*New*: ``R("df.decision_content.v1", payload minus DECISION_RUN_SPECIFIC_FIELDS)[:32]`` of a
    decision payload given as builtins (``msgspec.to_builtins(DecisionPayload)``)."""
    doc = dict(payload)
    for field, sub in DECISION_RUN_SPECIFIC_FIELDS:
        if sub is None:
            doc.pop(field, None)
        elif isinstance(doc.get(field), Mapping):
            doc[field] = {k: v for k, v in doc[field].items() if k != sub}
    return recipe_hash("df.decision_content.v1", doc)[:32]


def df_feature_snapshot_digest(inputs: Mapping[str, float]) -> str:
    """*New*: ``S("df.feature_snapshot.v1|" + "|".join(f"{name}={value!r}"))[:32]`` over the inputs
    (sorted by name) a decision was made on: what the decision saw, whichever sources served it."""
    body = "|".join(f"{name}={float(inputs[name])!r}" for name in sorted(inputs))
    return sha256_hex("df.feature_snapshot.v1|" + body)[:32]


def df_ofp_request_id(source_event_id: str, source_event_type: str, source_eb_ref: Mapping[str, Any]) -> str:
    """DF -> OFP ``request_id``: ``"df_ofp_" + H({source_event_id, source_event_type,
    source_eb_ref})[:16]``."""
    digest = _h(
        {
            "source_event_id": source_event_id,
            "source_event_type": source_event_type,
            "source_eb_ref": dict(source_eb_ref),
        }
    )
    return "df_ofp_" + digest[:16]


def al_semantic_key(platform_run_id: str, scenario_run_id: str, idempotency_key: str) -> str:
    """AL ``semantic_key``: ``H({platform_run_id, scenario_run_id, idempotency_key})`` (64)."""
    return _h(
        {
            "platform_run_id": platform_run_id,
            "scenario_run_id": scenario_run_id,
            "idempotency_key": idempotency_key,
        }
    )


def al_outcome_id(
    *,
    decision_id: str,
    action_id: str,
    idempotency_key: str,
    terminal_state: str,
    reason_code: str | None,
    final_attempt_seq: int,
) -> str:
    """AL ``outcome_id`` (EXECUTED/FAILED), also the outcome envelope ``event_id``:
    ``H({decision_id, action_id, idempotency_key, terminal_state, reason_code, final_attempt_seq})[:32]``."""
    return _h(
        {
            "decision_id": decision_id,
            "action_id": action_id,
            "idempotency_key": idempotency_key,
            "terminal_state": terminal_state,
            "reason_code": reason_code,
            "final_attempt_seq": final_attempt_seq,
        }
    )[:32]


def al_denied_outcome_id(
    *, decision_id: str, action_id: str, idempotency_key: str, authz_policy_rev: Any, reason: str
) -> str:
    """AL ``outcome_id`` for DENIED: ``H({decision_id, action_id, idempotency_key, status: "DENIED",
    authz_policy_rev, reason})[:32]``."""
    return _h(
        {
            "decision_id": decision_id,
            "action_id": action_id,
            "idempotency_key": idempotency_key,
            "status": "DENIED",
            "authz_policy_rev": authz_policy_rev,
            "reason": reason,
        }
    )[:32]


def al_checkpoint_token_id(outcome_id: str, action_id: str, decision_id: str) -> str:
    """AL checkpoint ``token_id``: ``sha256("{outcome_id}:{action_id}:{decision_id}")[:32]``."""
    return sha256_hex(f"{outcome_id}:{action_id}:{decision_id}")[:32]


def dl_posture_event_id(scope_key: str, posture_seq: int) -> str:
    """DL posture event id: ``sha256("{scope_key}|{posture_seq}")`` (64)."""
    return sha256_hex(f"{scope_key}|{posture_seq}")


def dl_governance_event_id(
    *, event_type: str, scope_key: str, ts_utc: str, policy_rev: Any, payload: Any
) -> str:
    """DL governance event id: ``H({event_type, scope_key, ts_utc, policy_rev, payload})`` (64)."""
    return _h(
        {
            "event_type": event_type,
            "scope_key": scope_key,
            "ts_utc": ts_utc,
            "policy_rev": policy_rev,
            "payload": payload,
        }
    )


def ieg_dedupe_key(platform_run_id: str, class_name: str, event_id: str) -> str:
    """IEG ``dedupe_key``: the IG formula, ``sha256("{platform_run_id}:{class}:{event_id}")``."""
    return ig_dedupe_key(platform_run_id, class_name, event_id)


def ieg_entity_id(
    entity_type: str, identifier_type: str, identifier_value: Any, pins: Mapping[str, Any]
) -> str:
    """IEG ``entity_id``: ``sha256("{entity_type}:{identifier_type}:{identifier_value}:{platform_run_id}|
    {manifest_fingerprint}|{parameter_hash}|{seed}|{scenario_id}|{scenario_run_id}|{run_id}")``,
    absent pins written as ``""``."""
    scope = "|".join(
        _text(pins.get(k))
        for k in (
            "platform_run_id",
            "manifest_fingerprint",
            "parameter_hash",
            "seed",
            "scenario_id",
            "scenario_run_id",
            "run_id",
        )
    )
    return sha256_hex(f"{entity_type}:{identifier_type}:{identifier_value}:{scope}")


def ieg_failure_id(topic: str, partition: int, offset: str, reason: str, event_id: str) -> str:
    """IEG apply ``failure_id``: ``sha256("{topic}:{partition}:{offset}:{reason}:{event_id}")[:32]``."""
    return sha256_hex(f"{topic}:{partition}:{offset}:{reason}:{event_id}")[:32]


def ieg_graph_version_id(stream_id: str, positions: Iterable[tuple[str, int, str, str]]) -> str:
    """IEG graph ``version_id``: ``H({stream_id, topics: {topic: {partitions: {"<p>": {next_offset,
    offset_kind}}}}})[:32]`` over ``(topic, partition, next_offset, offset_kind)`` positions.

    Truncated to 32: the decision payload contract validates ``graph_version.version_id`` as hex32,
    and the reference's 64-hex value got decisions quarantined (rtdl §7.7, §13 #6). Partition keys
    are strings so ``10`` sorts after ``9`` the same way everywhere.
    """
    topics: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for topic, partition, next_offset, offset_kind in positions:
        parts = topics.setdefault(topic, {"partitions": {}})["partitions"]
        parts[str(partition)] = {"next_offset": next_offset, "offset_kind": offset_kind}
    return _h({"stream_id": stream_id, "topics": topics})[:32]



def ieg_graph_as_of_version(platform_run_id: str, definition_digest: str, as_of_ts_utc: str) -> str:
    """*New*: the version of the IEG graph an answer reflects, ``derive_id("ieg.graph_version.v1",
    platform_run_id, definition_digest, as_of_ts_utc)`` (32).

    IEG answers are as of an event time (every observation strictly before it), so the run, the
    feature definition and that time name the graph exactly. Unlike ``ieg_graph_version_id`` it
    holds no bus offsets: two runs of one world stamp the same version on the same flow's answer.
    """
    return derive_id("ieg.graph_version.v1", platform_run_id, definition_digest, as_of_ts_utc)


def ieg_graph_as_of_versions(platform_run_id: str, definition_digest: str, as_of_ts_utc: Iterable[str]) -> list[str]:
    """``ieg_graph_as_of_version`` of many as-of times of one run: the shared prefix is hashed once
    (a reader stamps a version on each of a batch of answers)."""
    for part in (platform_run_id, definition_digest):
        if "|" in part:
            raise IdRecipeError(f"derive_id part contains '|': {part!r}")
    prefix = hashlib.sha256(f"ieg.graph_version.v1|{platform_run_id}|{definition_digest}|".encode())
    out = []
    for ts in as_of_ts_utc:
        if "|" in ts:
            raise IdRecipeError(f"derive_id part contains '|': {ts!r}")
        h = prefix.copy()
        h.update(ts.encode("utf-8"))
        out.append(h.hexdigest()[:32])
    return out

def csfb_failure_id(
    *,
    stream_id: str,
    platform_run_id: str,
    scenario_run_id: str,
    topic: str,
    partition: int,
    offset: str,
    event_id: str,
    reason: str,
    details: Mapping[str, Any],
) -> str:
    """CSFB ``failure_id``: ``sha256("{stream_id}:{platform_run_id}:{scenario_run_id}:{topic}:{partition}:
    {offset}:{event_id}:{reason}:{canon_compact(details)}")[:32]``."""
    tail = canon_compact(dict(details)).decode("ascii")
    return sha256_hex(
        f"{stream_id}:{platform_run_id}:{scenario_run_id}:{topic}:{partition}:{offset}:{event_id}:{reason}:{tail}"
    )[:32]


def csfb_binding_payload_hash(flow_id: Any, join_frame_key: Any, source_event_id: str) -> str:
    """CSFB flow-binding ``payload_hash``: ``H({flow_id, join_frame_key, source_event_id})`` (64)."""
    return _h({"flow_id": flow_id, "join_frame_key": join_frame_key, "source_event_id": source_event_id})


def ofp_basis_digest(stream: str, offset_kind: str, offsets: Iterable[tuple[str, int, str]]) -> str:
    """OFP input-basis digest: ``H({stream, offset_kind, offsets: [{topic, partition, offset}]})``.

    Offsets are sorted by (topic, partition) so the digest does not depend on enumeration order.
    """
    rows = [
        {"topic": topic, "partition": int(partition), "offset": offset}
        for topic, partition, offset in sorted(offsets, key=lambda o: (o[0], int(o[1])))
    ]
    return _h({"stream": stream, "offset_kind": offset_kind, "offsets": rows})


def ofp_snapshot_hash(
    *,
    pins: Mapping[str, Any],
    as_of_time_utc: str,
    feature_groups: Iterable[Mapping[str, Any]],
    feature_def_policy_rev: Any,
    eb_offset_basis: Any,
    graph_version: Any,
    run_config_digest: str | None,
    features: Mapping[str, Any],
    freshness: Any,
) -> str:
    """OFP ``snapshot_hash``: ``H({pins, as_of_time_utc, feature_groups (sorted by name, version),
    feature_def_policy_rev, eb_offset_basis, graph_version, run_config_digest, features, freshness})``."""
    groups = sorted(
        (dict(g) for g in feature_groups), key=lambda g: (str(g.get("name")), str(g.get("version")))
    )
    return _h(
        {
            "pins": dict(pins),
            "as_of_time_utc": as_of_time_utc,
            "feature_groups": groups,
            "feature_def_policy_rev": feature_def_policy_rev,
            "eb_offset_basis": eb_offset_basis,
            "graph_version": graph_version,
            "run_config_digest": run_config_digest,
            "features": dict(features),
            "freshness": freshness,
        }
    )


def ofp_definitions_digest(definitions: Mapping[str, Any]) -> str:
    """*New*: OFP feature definitions digest, ``R("ofp.feature_definitions.v1", definitions)`` over the
    parsed document (so comments and key order in the YAML do not change it)."""
    return recipe_hash("ofp.feature_definitions.v1", dict(definitions))


def ofp_vector_digest(definitions_digest: str, platform_run_id: str, flow_id: int, ts_utc: str,
                      values: Sequence[int]) -> str:
    """*New*: digest of one flow's feature vector, ``S("ofp.vector.v1|{definitions_digest}|
    {platform_run_id}|{flow_id}|{ts_utc}|" + values as little-endian int64 bytes)[:32]``.

    The values are hashed as their fixed-width bytes (the form OFP stores), not as text: DF
    computes it for every decision, and 100 vectors of ~100 values joined as text cost ~1 ms.
    """
    head = f"ofp.vector.v1|{definitions_digest}|{platform_run_id}|{flow_id}|{ts_utc}|".encode()
    return hashlib.sha256(head + struct.pack(f"<{len(values)}q", *values)).hexdigest()[:32]


def dla_quarantine_id(
    topic: str, partition: int, offset: str, offset_kind: str, reason_code: str, event_id: str
) -> str:
    """DLA intake ``quarantine_id``: ``sha256("{topic}|{partition}|{offset}|{offset_kind}|{reason_code}|
    {event_id}")[:32]``."""
    return sha256_hex(f"{topic}|{partition}|{offset}|{offset_kind}|{reason_code}|{event_id}")[:32]


def dla_audit_id(platform_run_id: str, event_type: str, event_id: str) -> str:
    """*New*: DLA audit record id, ``derive_id("dla.audit_id.v1", platform_run_id, event_type, event_id)``.

    Keyed like DLA's append candidate (run, type, event), so one record per audited event per run.
    """
    return derive_id("dla.audit_id.v1", platform_run_id, event_type, event_id)


def dla_intake_attempt_id(stream_id: str, topic: str, partition: int, offset_kind: str, offset: str) -> str:
    """*New*: DLA intake attempt id, ``derive_id("dla.intake_attempt_id.v1", stream_id, topic, partition,
    offset_kind, offset)``; the reference put wall time in it, so attempts never deduped (rtdl §9.5)."""
    return derive_id("dla.intake_attempt_id.v1", stream_id, topic, partition, offset_kind, offset)


# --------------------------------------------------------------------------------------------------
# Case + labels (case_operate_obs.md §0, §1.3)
# --------------------------------------------------------------------------------------------------

_CASE_PIN_KEYS: Final[tuple[str, ...]] = (
    "platform_run_id",
    "scenario_run_id",
    "manifest_fingerprint",
    "parameter_hash",
    "scenario_id",
    "seed",
)


def case_pins(pins: Mapping[str, Any]) -> dict[str, Any]:
    """Normalised case/label pins: the six required pins (seed as int, digit strings coerced, bools
    refused) plus ``run_id`` when present; what the case payload hashes cover."""
    out: dict[str, Any] = {}
    for key in _CASE_PIN_KEYS:
        if pins.get(key) in (None, ""):
            raise IdRecipeError(f"case pins: {key} is required")
        out[key] = pins[key]
    seed = out["seed"]
    if isinstance(seed, bool) or not (
        isinstance(seed, int) or (isinstance(seed, str) and seed.isascii() and seed.isdigit())
    ):
        raise IdRecipeError(f"case pins: seed must be a non-negative int, not {seed!r}")
    out["seed"] = int(seed)
    if out["seed"] < 0:
        raise IdRecipeError(f"case pins: seed must be a non-negative int, not {seed!r}")
    if pins.get("run_id") not in (None, ""):
        out["run_id"] = pins["run_id"]
    return out


def sort_evidence_refs(refs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Evidence refs in hash order: by (ref_type, ref_id, ref_scope), a missing scope sorting as ``""``."""
    return sorted(
        (dict(r) for r in refs),
        key=lambda r: (str(r["ref_type"]), str(r["ref_id"]), str(r.get("ref_scope") or "")),
    )


def case_id(platform_run_id: str, event_class: str, event_id: str) -> str:
    """CM ``case_id``: ``R("cm.case_id.v1", {platform_run_id, event_class, event_id})[:32]``."""
    return recipe_hash(
        "cm.case_id.v1",
        {"platform_run_id": platform_run_id, "event_class": event_class, "event_id": event_id},
    )[:32]


def case_trigger_id(case_id: str, trigger_type: str, source_ref_id: str) -> str:
    """``case_trigger_id`` (also the case_trigger envelope ``event_id``):
    ``R("cm.case_trigger_id.v1", {case_id, trigger_type, source_ref_id})[:32]``."""
    return recipe_hash(
        "cm.case_trigger_id.v1",
        {"case_id": case_id, "trigger_type": trigger_type, "source_ref_id": source_ref_id},
    )[:32]


def case_timeline_event_id(case_id: str, timeline_event_type: str, source_ref_id: str) -> str:
    """``case_timeline_event_id``: ``R("cm.case_timeline_event_id.v1", {case_id, timeline_event_type,
    source_ref_id})[:32]``."""
    return recipe_hash(
        "cm.case_timeline_event_id.v1",
        {"case_id": case_id, "timeline_event_type": timeline_event_type, "source_ref_id": source_ref_id},
    )[:32]


def case_trigger_payload_hash(
    *,
    case_subject_key: Mapping[str, Any],
    trigger_type: str,
    source_ref_id: str,
    pins: Mapping[str, Any],
    observed_time: str,
    evidence_refs: Iterable[Mapping[str, Any]],
    trigger_payload: Mapping[str, Any],
) -> str:
    """Trigger ``payload_hash``: ``R("cm.case_trigger_payload_hash.v1", {case_subject_key, trigger_type,
    source_ref_id, pins (case_pins), observed_time, evidence_refs (sorted), trigger_payload})`` (64)."""
    return recipe_hash(
        "cm.case_trigger_payload_hash.v1",
        {
            "case_subject_key": dict(case_subject_key),
            "trigger_type": trigger_type,
            "source_ref_id": source_ref_id,
            "pins": case_pins(pins),
            "observed_time": observed_time,
            "evidence_refs": sort_evidence_refs(evidence_refs),
            "trigger_payload": dict(trigger_payload),
        },
    )


def case_timeline_payload_hash(
    *,
    case_id: str,
    timeline_event_type: str,
    source_ref_id: str,
    pins: Mapping[str, Any],
    observed_time: str,
    evidence_refs: Iterable[Mapping[str, Any]],
    timeline_payload: Mapping[str, Any],
    case_subject_key: Mapping[str, Any] | None = None,
) -> str:
    """Timeline ``payload_hash``: ``R("cm.case_timeline_payload_hash.v1", {case_id, timeline_event_type,
    source_ref_id, pins, observed_time, evidence_refs, timeline_payload, case_subject_key or null})``."""
    return recipe_hash(
        "cm.case_timeline_payload_hash.v1",
        {
            "case_id": case_id,
            "timeline_event_type": timeline_event_type,
            "source_ref_id": source_ref_id,
            "pins": case_pins(pins),
            "observed_time": observed_time,
            "evidence_refs": sort_evidence_refs(evidence_refs),
            "timeline_payload": dict(timeline_payload),
            "case_subject_key": None if case_subject_key is None else dict(case_subject_key),
        },
    )


def label_assertion_id(
    case_timeline_event_id: str, platform_run_id: str, event_id: str, label_type: str
) -> str:
    """``label_assertion_id``: ``R("ls.label_assertion_id.v1", {case_timeline_event_id,
    label_subject_key{platform_run_id, event_id}, label_type})[:32]``; the label *value* is not an
    input, so a changed verdict on the same timeline event is a mismatch, not a new assertion."""
    return recipe_hash(
        "ls.label_assertion_id.v1",
        {
            "case_timeline_event_id": case_timeline_event_id,
            "label_subject_key": {"platform_run_id": platform_run_id, "event_id": event_id},
            "label_type": label_type,
        },
    )[:32]


def label_assertion_payload_hash(
    *,
    platform_run_id: str,
    event_id: str,
    label_type: str,
    label_value: str,
    effective_time: str,
    observed_time: str,
    source_type: str,
    actor_id: str | None,
    evidence_refs: Iterable[Mapping[str, Any]],
) -> str:
    """Label ``payload_hash``: ``R("ls.label_assertion_payload_hash.v1", {label_subject_key, label_type,
    label_value, effective_time, observed_time, source_type, actor_id or "", evidence_refs (sorted)})``;
    pins and ``label_payload`` are not hashed."""
    return recipe_hash(
        "ls.label_assertion_payload_hash.v1",
        {
            "label_subject_key": {"platform_run_id": platform_run_id, "event_id": event_id},
            "label_type": label_type,
            "label_value": label_value,
            "effective_time": effective_time,
            "observed_time": observed_time,
            "source_type": source_type,
            "actor_id": actor_id or "",
            "evidence_refs": sort_evidence_refs(evidence_refs),
        },
    )


def ls_adapter_case_timeline_event_id(
    writer_namespace: str, source_ref_id: str, platform_run_id: str, event_id: str, label_type: str
) -> str:
    """LS adapter ``case_timeline_event_id`` (external/engine-truth lanes):
    ``R("ls.adapter.case_timeline_event_id.v1", {writer_namespace, source_ref_id, label_subject_key,
    label_type})[:32]``."""
    return recipe_hash(
        "ls.adapter.case_timeline_event_id.v1",
        {
            "writer_namespace": writer_namespace,
            "source_ref_id": source_ref_id,
            "label_subject_key": {"platform_run_id": platform_run_id, "event_id": event_id},
            "label_type": label_type,
        },
    )[:32]


def ct_checkpoint_token_id(source_ref_id: str, case_trigger_id: str) -> str:
    """CaseTrigger checkpoint ``token_id``: ``sha256("{source_ref_id}:{case_trigger_id}")[:32]``."""
    return sha256_hex(f"{source_ref_id}:{case_trigger_id}")[:32]


def cm_evidence_request_id(case_id: str, case_timeline_event_id: str, ref_type: str, ref_id: str) -> str:
    """CM evidence ``request_id``: ``sha256("{case_id}:{case_timeline_event_id}:{ref_type}:
    {ref_id}")[:32]``."""
    return sha256_hex(f"{case_id}:{case_timeline_event_id}:{ref_type}:{ref_id}")[:32]


def cm_action_idempotency_key(
    case_id: str, source_case_event_id: str, action_kind: str, target_ref_type: str, target_ref_id: str
) -> str:
    """CM action ``idempotency_key``: ``R("cm.action_intent.idempotency_key.v1", {case_id,
    source_case_event_id, action_kind, target_ref{ref_type, ref_id}})`` (64)."""
    return recipe_hash(
        "cm.action_intent.idempotency_key.v1",
        {
            "case_id": case_id,
            "source_case_event_id": source_case_event_id,
            "action_kind": action_kind,
            "target_ref": {"ref_type": target_ref_type, "ref_id": target_ref_id},
        },
    )


def cm_action_id(case_id: str, source_case_event_id: str, action_idempotency_key: str) -> str:
    """CM ``action_id``: ``R("cm.action_intent.action_id.v1", {case_id, source_case_event_id,
    action_idempotency_key})[:32]``."""
    return recipe_hash(
        "cm.action_intent.action_id.v1",
        {
            "case_id": case_id,
            "source_case_event_id": source_case_event_id,
            "action_idempotency_key": action_idempotency_key,
        },
    )[:32]


def cm_manual_decision_id(case_id: str, source_case_event_id: str, action_kind: str) -> str:
    """CM default ``decision_id`` for manual actions: ``R("cm.action_intent.decision_id.v1",
    {seed: "{case_id}:{source_case_event_id}:{action_kind}"})[:32]``."""
    return recipe_hash(
        "cm.action_intent.decision_id.v1", {"seed": f"{case_id}:{source_case_event_id}:{action_kind}"}
    )[:32]


def cm_run_config_digest(pins: Mapping[str, Any]) -> str:
    """CM default ``run_config_digest``: ``R("cm.action_intent.run_config_digest.v1", the six pins
    with seed as int)``."""
    normalised = case_pins(pins)
    normalised.pop("run_id", None)
    return recipe_hash("cm.action_intent.run_config_digest.v1", normalised)


def lifecycle_event_id(platform_run_id: str, ref_id: str, lifecycle_type: str) -> str:
    """CM/LS lifecycle governance event id: ``sha256("{platform_run_id}|{ref_id}|{lifecycle_type}")``;
    ``ref_id`` is the timeline event id (CM) or the label assertion id (LS ``LABEL_ACCEPTED``)."""
    return sha256_hex(f"{platform_run_id}|{ref_id}|{lifecycle_type}")
