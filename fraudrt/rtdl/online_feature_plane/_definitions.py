"""Feature definitions: `config/features/online_feature_plane.yaml`, parsed, checked and digested once.

The online actor and the offline polars computation both read this one document, so the two
computations cannot drift apart in what they compute (keys, windows, bucket size, counterparties);
`digest` is recorded with every vector, and a policy bundle names the digest it was fitted with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec
import yaml

from fraudrt.config import config_dir
from fraudrt.contracts import ofp_definitions_digest

DEFAULT_FILE: Final = "online_feature_plane.yaml"
# The flow anchor's entity fields a key or a counterparty may name, in the kernel's entity order.
ENTITY_FIELDS: Final = ("merchant_id", "party_id", "account_id", "instrument_id", "device_id", "ip_id")
AGGREGATES: Final = ("count", "amount_sum_minor", "amount_max_minor", "distinct_counterparties")


class DefinitionsError(ValueError):
    """The feature definitions file is unreadable or inconsistent (the message names the problem)."""


class KeySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    field: str
    counterparty: str


class _Document(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    version: int
    bucket_seconds: int
    windows: dict[str, int]
    keys: dict[str, KeySpec]
    aggregates: list[str]


class FeatureDefinitions(msgspec.Struct, frozen=True, kw_only=True):
    """The checked definitions plus what both computations derive from them."""

    id: str
    version: int
    bucket_seconds: int
    # (name, seconds), shortest first: the kernel relies on the order (see `_kernel`).
    windows: tuple[tuple[str, int], ...]
    # (name, entity index of the key, entity index of the counterparty), in document order.
    keys: tuple[tuple[str, int, int], ...]
    digest: str

    @property
    def bucket_us(self) -> int:
        return self.bucket_seconds * 1_000_000

    @property
    def window_buckets(self) -> tuple[int, ...]:
        """n per window: the number of buckets a window spans (its own bucket included)."""
        return tuple(seconds // self.bucket_seconds for _, seconds in self.windows)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in vector order: key, then window, then aggregate."""
        return tuple(f"{key}_{window}_{agg}" for key, _, _ in self.keys for window, _ in self.windows
                     for agg in AGGREGATES)

    @property
    def width(self) -> int:
        return len(self.keys) * len(self.windows) * len(AGGREGATES)


def parse_definitions(document: dict[str, object]) -> FeatureDefinitions:
    """Check a parsed definitions document; every inconsistency is a `DefinitionsError`."""
    try:
        doc = msgspec.convert(document, _Document)
    except msgspec.ValidationError as exc:
        raise DefinitionsError(f"feature definitions: {exc}") from None
    if doc.bucket_seconds <= 0:
        raise DefinitionsError("feature definitions: bucket_seconds must be > 0")
    if not doc.windows or not doc.keys:
        raise DefinitionsError("feature definitions: at least one window and one key are needed")
    for name, seconds in doc.windows.items():
        if seconds <= 0 or seconds % doc.bucket_seconds:
            raise DefinitionsError(f"feature definitions: window {name} ({seconds} s) is not a positive "
                                   f"multiple of bucket_seconds ({doc.bucket_seconds})")
    if len(set(doc.windows.values())) != len(doc.windows):
        raise DefinitionsError("feature definitions: two windows have the same length")
    for name, spec in doc.keys.items():
        for what, field in (("field", spec.field), ("counterparty", spec.counterparty)):
            if field not in ENTITY_FIELDS:
                raise DefinitionsError(f"feature definitions: key {name} {what} {field!r} is not one of "
                                       f"{', '.join(ENTITY_FIELDS)}")
        if spec.field == spec.counterparty:
            raise DefinitionsError(f"feature definitions: key {name} counts itself as its counterparty")
    if tuple(doc.aggregates) != AGGREGATES:
        raise DefinitionsError(f"feature definitions: aggregates must be {list(AGGREGATES)} (version 1 "
                               "computes exactly these)")
    windows = tuple(sorted(doc.windows.items(), key=lambda kv: kv[1]))
    keys = tuple((name, ENTITY_FIELDS.index(s.field), ENTITY_FIELDS.index(s.counterparty))
                 for name, s in doc.keys.items())
    return FeatureDefinitions(id=doc.id, version=doc.version, bucket_seconds=doc.bucket_seconds,
                              windows=windows, keys=keys,
                              digest=ofp_definitions_digest(msgspec.to_builtins(doc)))


def load_definitions(path: Path | None = None) -> FeatureDefinitions:
    """The definitions in `path` (default: `config/features/online_feature_plane.yaml`)."""
    source = path or config_dir() / "features" / DEFAULT_FILE
    try:
        document = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DefinitionsError(f"feature definitions {source}: {exc}") from None
    if not isinstance(document, dict):
        raise DefinitionsError(f"feature definitions {source}: not a mapping")
    return parse_definitions(document)
