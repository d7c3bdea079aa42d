"""The one definition of the graph and its features, shared by the actor and the offline computation.

Observations. Every flow anchor of the run is one observation of its flow's entity tuple (party,
account, instrument, device, ip, merchant) at the anchor's event time `t` (the payload's `ts_utc`,
which is also the flow's AUTH_REQUEST time). Edges are typed and directed by their type's name:

    party_account       party -> account         party_device   party -> device
    account_instrument  account -> instrument    party_ip       party -> ip
    instrument_merchant instrument -> merchant   device_ip      device -> ip

Each edge (and each entity) keeps first seen / last seen (event time) and the number of
observations. Entity ids are the engine's own integer ids, typed by the entity type; ids of unsigned
64-bit columns at or above 2**63 are stored as their two's-complement int64 (`to_i64`), which is
one-to-one on [0, 2**64) and lets every id be a Postgres BIGINT.

Features of a flow f (entities P, A, I, D, X; time t). "Before f" means observations with event time
strictly earlier than t: f's own observation, and any other flow at exactly t, never count. Each is
therefore a pure function of the world's events before t, whatever else has been applied.

- `device_party_count_24h`: distinct parties observed with D in the window W(t), capped at
  `distinct_cap`. W(t) = [floor_hour(t) - 24h, t): the 24 whole UTC hours before t's hour plus t's
  own hour up to t (so between 24 and 25 hours long; hour-aligned, so it is kept as hourly
  buckets and reproduced exactly offline).
- `ip_party_count_24h`: the same for X.
- `device_new_for_party`: no observation of (P, D) before f. `ip_new_for_party`: the same for (P, X).
- `instrument_account_count`: distinct accounts observed with I before f (its own account counts if
  it was seen with I before).
- `neighbourhood_2hop`: the number of entities within two hops of the flow's entities
  S = {P, A, I, D, X} in the identity graph before f, S itself excluded, capped at
  `neighbourhood_cap`. The identity graph is the undirected graph of the first five edge types
  with edges first seen before t; merchants are left out (every merchant is a hub of thousands
  of instruments, so a walk through them says nothing). With N1 = neighbours(S):
  min(cap, |(N1 ∪ neighbours(N1 \\ S)) \\ S|). The cap bounds the walk: the actor stops at `cap`
  new entities, so the cost per flow never grows with the run.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from fraudrt.contracts import canon_compact, ieg_graph_as_of_version

DEFINITION_NAME: Final = "ieg.graph_features.v1"
HOUR_US: Final = 3_600_000_000


class Definition(msgspec.Struct, frozen=True, kw_only=True):
    """The parameters of the features; `DEFINITION` is the platform's. Tests shrink the caps."""

    window_hours: int = 24
    distinct_cap: int = 100
    neighbourhood_cap: int = 64

    def digest(self) -> str:
        return hashlib.sha256(canon_compact({"name": DEFINITION_NAME, "edge_types": list(EDGE_TYPES),
                                             **msgspec.to_builtins(self)})).hexdigest()[:32]


ENTITY_TYPES: Final = ("party", "account", "instrument", "device", "ip", "merchant")
# (edge type, source entity type, destination entity type), in this order everywhere.
EDGE_TYPES: Final[tuple[tuple[str, str, str], ...]] = (
    ("party_account", "party", "account"),
    ("account_instrument", "account", "instrument"),
    ("party_device", "party", "device"),
    ("party_ip", "party", "ip"),
    ("device_ip", "device", "ip"),
    ("instrument_merchant", "instrument", "merchant"),
)
# The graph the two-hop neighbourhood walks (every type but instrument_merchant).
IDENTITY_EDGE_TYPES: Final = tuple(e for e in EDGE_TYPES if e[0] != "instrument_merchant")
FEATURE_NAMES: Final = (
    "device_party_count_24h",
    "ip_party_count_24h",
    "device_new_for_party",
    "ip_new_for_party",
    "instrument_account_count",
    "neighbourhood_2hop",
)

DEFINITION: Final = Definition()
DEFINITION_DIGEST: Final = DEFINITION.digest()

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_U64: Final = 1 << 64
_I64: Final = 1 << 63


class BadObservation(ValueError):
    """A flow anchor the graph cannot use (dead-lettered with this message as the reason)."""


def to_i64(value: int) -> int:
    """An engine id in [0, 2**64) as the int64 with the same bits (ids >= 2**63 become negative)."""
    if not 0 <= value < _U64:
        raise BadObservation(f"ID_OUT_OF_RANGE: {value} is not an unsigned 64-bit id")
    return value - _U64 if value >= _I64 else value


def event_time_us(ts_utc: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time with a zone (the engine writes `...ffffffZ`)."""
    try:
        dt = datetime.fromisoformat(ts_utc)
    except ValueError:
        raise BadObservation(f"BAD_TS_UTC: {ts_utc!r} is not an RFC 3339 time") from None
    if dt.tzinfo is None:
        raise BadObservation(f"BAD_TS_UTC: {ts_utc!r} has no zone")
    return (dt - _EPOCH) // _ONE_US


def format_us(us: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` of microseconds since the epoch."""
    dt = _EPOCH + timedelta(microseconds=us)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031
        dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond)


def graph_version(platform_run_id: str, as_of_us: int, definition_digest: str = DEFINITION_DIGEST) -> str:
    """The version of the graph an answer reflects: run, definition and the as-of time (exclusive).

    Deterministic in the world (never bus positions or timing), so two runs of one world that
    decide alike stamp alike.
    """
    return ieg_graph_as_of_version(platform_run_id, definition_digest, format_us(as_of_us))
