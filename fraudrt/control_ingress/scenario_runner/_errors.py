"""SR errors: a stable reason code an operator (and a test) can match on, plus a readable message."""

from __future__ import annotations


class ScenarioRunnerError(Exception):
    """`code` is stable (e.g. `EQUIV_KEY_COLLISION`, `STREAM_VIEW_RECEIPT_MISSING`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class LedgerDrift(ScenarioRunnerError):
    """A write-once ledger object already exists with different content."""
