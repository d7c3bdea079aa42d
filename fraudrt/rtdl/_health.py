"""A health verdict from a component's own signals: each check adds a finding, the worst one wins.

`Findings.ladder(value, amber, red, reason)` is the common check (a number against an AMBER and a
RED threshold); `flag` adds a finding of a fixed state. Reasons are stable codes followed by the
numbers behind them, so an operator sees why without opening the metrics.
"""

from __future__ import annotations

from typing import Final

_RANK: Final = {"GREEN": 0, "AMBER": 1, "RED": 2}


class Findings:
    def __init__(self) -> None:
        self._found: list[tuple[str, str]] = []

    def ladder(self, value: float, amber: float, red: float, reason: str) -> None:
        """AMBER at `amber` or more, RED at `red` or more."""
        if value >= red:
            self._found.append(("RED", reason))
        elif value >= amber:
            self._found.append(("AMBER", reason))

    def flag(self, state: str, reason: str) -> None:
        self._found.append((state, reason))

    def verdict(self) -> tuple[str, list[str]]:
        state = max((s for s, _ in self._found), key=_RANK.__getitem__, default="GREEN")
        return state, [r for _, r in self._found]
