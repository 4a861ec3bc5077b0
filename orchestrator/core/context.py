"""What step code sees while it runs: the :class:`StepContext` protocol.

The worker implements it (``consumers/context.py``); the test kit has an
in-memory implementation.  This module imports nothing but the standard
library so the pure core stays free of database drivers.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

__all__ = ["StepContext", "check_progress"]


def check_progress(message: str | None, fraction: float | None, partial: str | None) -> None:
    """Refuse a progress call that says nothing, or a fraction outside 0..1 (``ValueError``)."""
    if message is None and fraction is None and partial is None:
        raise ValueError("ctx.progress() needs a message, a fraction or partial output")
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"ctx.progress(fraction={fraction!r}): a fraction is between 0 and 1")


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

    def progress(
        self, message: str | None = None, fraction: float | None = None, partial: str | None = None
    ) -> None:
        """Publish advisory progress: a message, a fraction done (0..1), a chunk of partial
        output (an LLM's tokens).  Never journaled; a lost one loses no state, and a failure
        to publish never fails the step (``sagaline watch``, ``SagaHandle.stream()``)."""
        ...
