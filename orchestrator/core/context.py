"""What step code sees while it runs: the :class:`StepContext` protocol.

The worker implements it (``consumers/context.py``); the test kit has an
in-memory implementation.  This module imports nothing but the standard
library so the pure core stays free of database drivers.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

__all__ = ["StepContext"]


@runtime_checkable
class StepContext(Protocol):
    """The running step's identity, deadline, heartbeat, usage and database."""

    @property
    def saga_id(self) -> str: ...

    @property
    def saga_type(self) -> str: ...

    @property
    def step(self) -> str:
        """The task's step name (``"investigate#3"`` for an agent turn)."""
        ...

    @property
    def attempt(self) -> int: ...

    @property
    def idempotency_key(self) -> str:
        """Stable across retries of one execution: pass it to external systems."""
        ...

    @property
    def deadline(self) -> datetime | None: ...

    @property
    def db(self) -> Any:
        """The step's database transaction (commits with the recorded result)."""
        ...

    @property
    def logger(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]: ...

    def heartbeat(self, progress: float | None = None, detail: str | None = None) -> None:
        """Tell the orchestrator the step is alive (resets the heartbeat timeout)."""
        ...

    def report_usage(
        self, *, llm_calls: int = 0, tokens_in: int = 0, tokens_out: int = 0, cost_micros: int = 0
    ) -> None:
        """Add LLM usage to the step's reply (fed to the saga's budget)."""
        ...
