"""Test-only crash points: a real SIGKILL at a named place in the code.

``SAGALINE_CRASH_AT=<name>`` kills the process the first time execution
reaches ``crash_point(<name>)``; ``SAGALINE_CRASH_SKIP=<n>`` lets the first
``n`` passes through.  Unset (production), a crash point costs one dict
lookup.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["CRASH_POINTS", "crash_point"]

#: The crash points the worker and the relay define.
CRASH_POINTS = (
    "worker_after_step",  # the step's writes are done, its transaction is not committed
    "worker_after_commit",  # Postgres committed, the Kafka offset is not committed
    "worker_in_kafka_transaction",  # Kafka-only path: replies and offsets sent, not committed
    "relay_after_publish",  # Kafka acked the batch, the rows are not marked sent
)

_lock = threading.Lock()
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if ``SAGALINE_CRASH_AT`` names this point."""
    if os.environ.get("SAGALINE_CRASH_AT") != name:
        return
    skip = int(os.environ.get("SAGALINE_CRASH_SKIP", "0"))
    with _lock:
        seen = _passes.get(name, 0)
        _passes[name] = seen + 1
    if seen >= skip:
        os.kill(os.getpid(), signal.SIGKILL)
