"""The key → partition rule every sagaline producer follows.

sagaline uses librdkafka's default ``consistent_random`` partitioner:
``crc32(key) % partitions`` for keyed messages.  Producers that are not
built on librdkafka (Java, Go's franz-go, ...) must pick the partition
explicitly with :func:`partition_for`'s rule so that a saga's commands and
replies share the partition of its state.
"""

from __future__ import annotations

import zlib

__all__ = ["partition_for"]


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` (CRC32, as librdkafka's default)."""
    if partitions <= 0:
        raise ValueError("partitions must be positive")
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return zlib.crc32(raw) % partitions
