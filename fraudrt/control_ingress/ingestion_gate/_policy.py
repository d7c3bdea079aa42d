"""IG policy: class map, schema policy and partitioning profiles from `config/ig/*.yaml`, compiled once.

Everything an admission needs per event type (class, pins, allowed versions, payload field checks,
stream and key precedence) is resolved at startup into one `TypeRule`, so the hot path is a dict
lookup and a few isinstance checks; a policy that does not hang together fails startup, not traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import yaml

from fraudrt.config import Settings, config_dir
from fraudrt.contracts import ig_policy_digest

CLASS_MAP_FILE: Final = "class_map.yaml"
SCHEMA_POLICY_FILE: Final = "schema_policy.yaml"
PARTITIONING_FILE: Final = "partitioning_profiles.yaml"

# Pins a class may require: top-level envelope fields.
KNOWN_PINS: Final = frozenset({"platform_run_id", "scenario_run_id", "manifest_fingerprint", "parameter_hash",
                               "seed", "scenario_id", "run_id"})
_ENVELOPE_ROOTS: Final = frozenset({"event_id", "event_type", "schema_version", "ts_utc", "payload", "producer",
                                    "parent_event_id", "trace_id", "span_id", "emitted_at_utc"}) | KNOWN_PINS


class PolicyError(Exception):
    """The IG policy files are inconsistent or unreadable; the message names the file and key."""


# ---- the YAML documents (closed: a typo'd key is an error, not a silently ignored rule)



class ClassSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    required_pins: list[str]
    partitioning_profile: str


class ClassMapDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    version: str
    classes: dict[str, ClassSpec]
    event_types: dict[str, str]


class FieldSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    type: str | list[str]
    required: bool = True


class EventTypeSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    class_: str = msgspec.field(name="class")
    schema_version_required: bool = False
    allowed_schema_versions: list[str] = msgspec.field(default_factory=list)
    additional_properties: bool = True
    payload: dict[str, FieldSpec] = msgspec.field(default_factory=dict)


class SchemaPolicyDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    policy_id: str
    revision: str
    default_action: str = "quarantine"
    event_types: dict[str, EventTypeSpec]


class ProfileSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    stream: str
    key_precedence: list[str]
    hash: str = "sha256"


class PartitioningDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    version: str
    profiles: dict[str, ProfileSpec]


# ---- compiled form

_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


@dataclass(frozen=True, slots=True)
class FieldRule:
    name: str
    types: tuple[type, ...]
    type_names: str
    required: bool
    # bool is an int subclass: `integer`/`number` must not accept true/false.
    allows_bool: bool


@dataclass(frozen=True, slots=True)
class Route:
    profile_id: str
    stream: str
    key_paths: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class TypeRule:
    event_type: str
    event_class: str
    required_pins: tuple[str, ...]
    version_required: bool
    allowed_versions: frozenset[str]
    fields: tuple[FieldRule, ...]
    field_names: frozenset[str]
    additional_properties: bool
    route: Route


@dataclass(frozen=True, slots=True)
class PolicyRev:
    policy_id: str
    revision: str
    content_digest: str


@dataclass(frozen=True, slots=True)
class Policy:
    rules: dict[str, TypeRule]
    rev: PolicyRev
    streams: tuple[str, ...]
    directory: str


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc


def _convert(doc: Any, kind: type[msgspec.Struct], path: Path) -> Any:
    try:
        return msgspec.convert(doc, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise PolicyError(f"{path}: {exc}") from exc


def _field_rule(event_type: str, name: str, spec: FieldSpec) -> FieldRule:
    names = [spec.type] if isinstance(spec.type, str) else list(spec.type)
    types: list[type] = []
    for n in names:
        if n not in _TYPES:
            raise PolicyError(f"{SCHEMA_POLICY_FILE}: {event_type}.payload.{name}: unknown type {n!r}")
        types.extend(_TYPES[n])
    return FieldRule(name, tuple(types), "|".join(names), spec.required, "boolean" in names)


def load_policy(settings: Settings, directory: Path | None = None) -> Policy:
    """Load and cross-check the three policy files; stream names get `settings.streams` (prefix included)."""
    folder = directory or config_dir() / "ig"
    raw = {name: _load_yaml(folder / name) for name in (CLASS_MAP_FILE, SCHEMA_POLICY_FILE, PARTITIONING_FILE)}
    class_map: ClassMapDoc = _convert(raw[CLASS_MAP_FILE], ClassMapDoc, folder / CLASS_MAP_FILE)
    schema: SchemaPolicyDoc = _convert(raw[SCHEMA_POLICY_FILE], SchemaPolicyDoc, folder / SCHEMA_POLICY_FILE)
    parts: PartitioningDoc = _convert(raw[PARTITIONING_FILE], PartitioningDoc, folder / PARTITIONING_FILE)
    if schema.default_action != "quarantine":
        raise PolicyError(f"{SCHEMA_POLICY_FILE}: default_action must be 'quarantine'")

    known_streams = {f for f in settings.streams.__struct_fields__ if f != "prefix"}
    routes: dict[str, Route] = {}
    for profile_id, prof in parts.profiles.items():
        if prof.hash != "sha256":
            raise PolicyError(f"{PARTITIONING_FILE}: {profile_id}: UNSUPPORTED_HASH_ALGO {prof.hash!r}")
        if prof.stream not in known_streams:
            raise PolicyError(f"{PARTITIONING_FILE}: {profile_id}: stream {prof.stream!r} is not a logical "
                              f"stream name of Settings.streams ({sorted(known_streams)})")
        if not prof.key_precedence:
            raise PolicyError(f"{PARTITIONING_FILE}: {profile_id}: empty key_precedence")
        paths = tuple(tuple(p.split(".")) for p in prof.key_precedence)
        for p in paths:
            if p[0] not in _ENVELOPE_ROOTS:
                raise PolicyError(f"{PARTITIONING_FILE}: {profile_id}: {'.'.join(p)} is not an envelope path")
        routes[profile_id] = Route(profile_id, settings.streams.name(prof.stream), paths)

    for cls, spec in class_map.classes.items():
        unknown = set(spec.required_pins) - KNOWN_PINS
        if unknown:
            raise PolicyError(f"{CLASS_MAP_FILE}: class {cls}: unknown pins {sorted(unknown)}")
        if "platform_run_id" not in spec.required_pins:
            # The dedupe scope and the receipt prefix are the platform run: it cannot be optional.
            raise PolicyError(f"{CLASS_MAP_FILE}: class {cls} must require platform_run_id")
        if spec.partitioning_profile not in routes:
            raise PolicyError(f"{CLASS_MAP_FILE}: class {cls}: unknown profile {spec.partitioning_profile!r}")
        if cls.startswith(("rtdl_", "case_")) and "run_id" in spec.required_pins:
            raise PolicyError(f"{CLASS_MAP_FILE}: class {cls}: RTDL/case classes must not require run_id")

    rules: dict[str, TypeRule] = {}
    for event_type, ets in schema.event_types.items():
        mapped = class_map.event_types.get(event_type)
        if mapped is None:
            raise PolicyError(f"{SCHEMA_POLICY_FILE}: {event_type} has no class in {CLASS_MAP_FILE}")
        cls = mapped
        if cls != ets.class_:
            raise PolicyError(f"{SCHEMA_POLICY_FILE}: {event_type}: class {ets.class_!r} but {CLASS_MAP_FILE} "
                              f"says {cls!r}")
        if cls not in class_map.classes:
            raise PolicyError(f"{CLASS_MAP_FILE}: {event_type}: unknown class {cls!r}")
        cspec = class_map.classes[cls]
        fields = tuple(_field_rule(event_type, n, f) for n, f in ets.payload.items())
        rules[event_type] = TypeRule(
            event_type=event_type, event_class=cls, required_pins=tuple(cspec.required_pins),
            version_required=ets.schema_version_required, allowed_versions=frozenset(ets.allowed_schema_versions),
            fields=fields, field_names=frozenset(f.name for f in fields),
            additional_properties=ets.additional_properties, route=routes[cspec.partitioning_profile],
        )
    missing = set(class_map.event_types) - set(rules)
    if missing:
        raise PolicyError(f"{CLASS_MAP_FILE}: event types without a schema policy: {sorted(missing)}")

    digest = ig_policy_digest({f"config/ig/{name}": doc for name, doc in raw.items()})
    rev = PolicyRev(schema.policy_id, schema.revision, digest)
    streams = tuple(sorted({r.route.stream for r in rules.values()}))
    return Policy(rules=rules, rev=rev, streams=streams, directory=str(folder))
