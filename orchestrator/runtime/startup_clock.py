"""How long a process took to start: one ``startup`` log line per phase.

A replacement orchestrator, worker or relay must move the sagas it takes over
within a second of its start (issue #11 goal 6), so each logs where its start
went, from the moment the OS started the process (the interpreter's own start
and the imports included)::

    startup orchestrator: imports +0.412s (cpu 0.398s)
    startup orchestrator: kafka answered +0.530s (cpu 0.450s)

``+`` is wall time since the process started, ``cpu`` the process's CPU time
(user + system) so far: under load the first grows, the second does not.
The lines are at INFO (``--log-level INFO``, the worker's and relay's default).
"""

from __future__ import annotations

import logging
import os
import time

__all__ = ["log_startup", "process_age_s"]

log = logging.getLogger("sagaline.startup")


def _started_s() -> float | None:
    """When this process started, on ``CLOCK_BOOTTIME`` (Linux); ``None`` elsewhere."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks
    except (OSError, ValueError, IndexError):
        return None


_STARTED = _started_s()
#: the fallback origin when /proc is not there: the first import of this module
_IMPORTED = time.monotonic()


def process_age_s() -> float:
    """Seconds since this process started (since this module's import without /proc)."""
    if _STARTED is not None and hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME) - _STARTED
    return time.monotonic() - _IMPORTED


def log_startup(service: str, phase: str) -> None:
    """Log ``startup <service>: <phase> +<age>s (cpu <cpu>s)`` at INFO."""
    log.info(
        "startup %s: %s +%.3fs (cpu %.3fs)", service, phase, process_age_s(), time.process_time()
    )
