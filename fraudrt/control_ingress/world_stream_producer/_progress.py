"""Checkpoint over a contiguous prefix of acknowledged events, per output.

The checkpoint may only cover events whose predecessors are all acknowledged, or a crash would skip
the gap. Each output's lane acknowledges its batches in order today (`_lanes.py`), so the prefix
simply follows the acks; the tracker still accepts acks in any order, so the checkpoint stays
correct whatever schedules the pushes. The position stored is the
*next* row to read (part index, row index), so a restart opens that part and seeks to its row group
instead of re-reading the view from the beginning (critique §13.1 #6).
"""

from __future__ import annotations

from typing import NamedTuple


class Position(NamedTuple):
    """The next row to read: part `part_index` of the view's part list, row `row_index` inside it."""

    part_index: int
    row_index: int


START = Position(0, 0)


class PrefixTracker:
    """Ordinals are issued in stream order; `ack` may arrive in any order."""

    def __init__(self, acked: int = 0, position: Position = START) -> None:
        self.acked = acked  # length of the acknowledged prefix == the next ordinal the prefix waits for
        self.position = position  # where to resume: just after the prefix's last event
        self._issued = acked
        self._early: dict[int, Position] = {}  # acknowledged beyond a gap: ordinal -> position after it

    @property
    def issued(self) -> int:
        return self._issued

    @property
    def in_flight(self) -> int:
        return self._issued - self.acked

    def issue(self) -> int:
        ordinal = self._issued
        self._issued += 1
        return ordinal

    def ack(self, ordinal: int, position_after: Position) -> bool:
        """Record that `ordinal` is acknowledged; True when the prefix (and so the checkpoint) moved."""
        if ordinal < self.acked or ordinal >= self._issued:
            # A repeated ack (a retried batch) or one never issued: neither may move the prefix.
            return False
        self._early[ordinal] = position_after
        moved = False
        while self.acked in self._early:
            self.position = self._early.pop(self.acked)
            self.acked += 1
            moved = True
        return moved
