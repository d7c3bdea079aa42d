"""Run identities ("pins"): the platform run id and the world/scenario key every event carries."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from ._formats import (
    PLATFORM_RUN_ID_PATTERN,
    UINT64_MAX,
    Hex32,
    Hex64,
    PlatformRunId,
    ScenarioId,
    Seed,
)

PLATFORM_RUN_ID_RE: Final = re.compile(PLATFORM_RUN_ID_PATTERN)


def mint_platform_run_id(now: datetime | None = None) -> str:
    """``platform_YYYYMMDDTHHMMSSZ`` from ``now`` (default: UTC wall clock), second resolution.

    Two runs minted in the same second collide; the caller (``fraudrt run new``) must refuse an
    id whose run directory already exists rather than share it.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now!r}: platform_run_id needs an aware datetime")
    else:
        now = now.astimezone(UTC)
    return "platform_" + now.strftime("%Y%m%dT%H%M%SZ")


def is_platform_run_id(value: object) -> bool:
    """True if ``value`` is a string of the form ``platform_YYYYMMDDTHHMMSSZ``."""
    return isinstance(value, str) and PLATFORM_RUN_ID_RE.match(value) is not None


class Pins(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """The identity of one scenario activation of one world inside one platform run.

    ``run_id`` is the *engine* run id (hex32), not the SR id (that is ``scenario_run_id``); RTDL and
    case events do not require it, hence optional. Constructing a Pins does not validate formats
    (msgspec only checks constraints when decoding): use ``Pins.from_mapping`` at a boundary.
    """

    platform_run_id: PlatformRunId
    scenario_run_id: Hex32
    manifest_fingerprint: Hex64
    parameter_hash: Hex64
    seed: Seed
    scenario_id: ScenarioId
    run_id: Hex32 | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Pins:
        """Validate and build from a mapping; unknown keys and bad formats raise ``ValueError``.

        Strict: a seed given as ``"42"`` or ``True`` is refused, not coerced.
        """
        try:
            pins = msgspec.convert(dict(data), cls, strict=True)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid pins: {exc}") from None
        if pins.seed > UINT64_MAX:
            raise ValueError(f"invalid pins: seed {pins.seed} exceeds uint64")
        return pins

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the pins, ``run_id`` omitted when absent (as on the wire)."""
        out: dict[str, Any] = msgspec.structs.asdict(self)
        if out["run_id"] is None:
            del out["run_id"]
        return out
