"""Oracle errors: every failure carries a stable reason code an operator (and a test) can match on."""

from __future__ import annotations


class OracleError(Exception):
    """An oracle command failed; ``code`` is the stable reason (e.g. ``SEAL_CONFLICT``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class OracleConflict(OracleError):
    """A write-once artifact already exists with different content (pack, seal, stream-sort receipt)."""
