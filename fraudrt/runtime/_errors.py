"""Errors that carry their retry policy, so callers decide by attribute, not by type lists."""

from __future__ import annotations


class FraudrtRuntimeError(Exception):
    retriable: bool = False
    # Seconds to wait before the next try; callers add jitter and grow it.
    backoff: float = 0.0


class BusError(FraudrtRuntimeError):
    """A Kinesis data-plane call failed."""

    def __init__(self, code: str, message: str, *, retriable: bool, backoff: float = 0.2,
                 status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.retriable = retriable
        self.backoff = backoff
        self.status = status


class ThrottledError(BusError):
    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(code, message, retriable=True, backoff=0.5, status=status)


class ExpiredIteratorError(BusError):
    """The shard iterator is too old or invalid: re-create it from the last sequence number seen."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(code, message, retriable=True, backoff=0.0, status=status)


class StreamNotFoundError(BusError):
    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(code, message, retriable=False, status=status)


class ActorMissingError(FraudrtRuntimeError):
    """A pack manifest names an actor whose code does not exist yet."""


class PackError(FraudrtRuntimeError):
    """A pack cannot be started, stopped or inspected as asked; the message says why."""
