"""A health verdict from a component's own signals: each check adds a finding, the worst one wins.

`Findings.ladder(value, amber, red, reason)` is the common check (a number against an AMBER and a
RED threshold, either of which may be absent); `flag` adds a finding of a fixed state. Reasons are
stable codes followed by the numbers behind them, so an operator sees why without opening the
metrics. `worst` / `worst_of` combine verdicts (a component is as healthy as the worst of its parts).
`HealthThresholds` is the base of a component's limits, set from its manifest entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Self

import msgspec

_RANK: Final = {"GREEN": 0, "AMBER": 1, "RED": 2}

Health = tuple[str, list[str]]


class HealthThresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A component's AMBER/RED limits; subclasses declare them as fields with their defaults."""

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Self:
        """From a manifest component's `options.health` (an unknown key is an error, not ignored)."""
        return msgspec.convert(options.get("health", {}), cls)


def worst(*states: str) -> str:
    """The worst of `states` (an unknown state counts as RED); GREEN for none."""
    return max(states, key=lambda s: _RANK.get(s, 2)) if states else "GREEN"


def worst_of(*healths: Health) -> Health:
    """The worst state of `healths`, with all of their reasons in order."""
    return worst(*(h[0] for h in healths)), [r for h in healths for r in h[1]]


class Findings:
    """Findings in the order they were added; `verdict()` is (worst state, their reasons)."""

    def __init__(self) -> None:
        self._found: list[tuple[str, str]] = []

    def ladder(self, value: float, amber: float | None, red: float | None, reason: str, *,
               red_reason: str | None = None) -> None:
        """AMBER at `amber` or more, RED at `red` or more (`red_reason` instead of `reason` if given)."""
        if red is not None and value >= red:
            self._found.append(("RED", red_reason or reason))
        elif amber is not None and value >= amber:
            self._found.append(("AMBER", reason))

    def flag(self, state: str, reason: str) -> None:
        self._found.append((state, reason))

    def verdict(self) -> Health:
        return worst(*(s for s, _ in self._found)), [r for _, r in self._found]
