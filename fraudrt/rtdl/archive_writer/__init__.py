"""ArchiveWriter: a durable archive of every fp.bus.* record of the run, beyond Kinesis retention."""

from ._actor import ArchiveWriter, segment_key

__all__ = ["ArchiveWriter", "segment_key"]
