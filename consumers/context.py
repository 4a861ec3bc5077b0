"""The :class:`~sagaline.orchestrator.core.context.StepContext` the worker gives every step."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from sagaline.consumers.errors import NoDatabaseInStep, StepTimeout
from sagaline.orchestrator.core.context import check_progress
from sagaline.schemas.base import Payload, Usage

__all__ = ["HeartbeatSink", "ProgressSink", "WorkerStepContext"]

#: Sends one heartbeat: (progress, detail).
HeartbeatSink = Callable[[float | None, str | None], None]
#: Publishes one progress item: (message, fraction, partial); never raises on a failed publish.
ProgressSink = Callable[[str | None, float | None, str | None], None]


class WorkerStepContext:
    """Identity, deadline, heartbeat, usage and database transaction of one running step."""

    def __init__(
        self,
        *,
        saga_id: str,
        saga_type: str,
        step: str,
        attempt: int,
        idempotency_key: str,
        task_id: str,
        kind: str,
        deadline: datetime | None,
        db: psycopg.Connection | None,
        heartbeat_sink: HeartbeatSink | None = None,
        heartbeat_interval: float = 1.0,
        step_result: Payload | None = None,
        logger: logging.Logger | None = None,
        progress_sink: ProgressSink | None = None,
    ) -> None:
        self._saga_id = saga_id
        self._saga_type = saga_type
        self._step = step
        self._attempt = attempt
        self._idempotency_key = idempotency_key
        self._deadline = deadline
        self._db = db
        self._sink = heartbeat_sink
        self._interval = heartbeat_interval
        self._last_beat = float("-inf")
        self._lock = threading.Lock()
        self._usage = Usage()
        self.task_id = task_id
        self.kind = kind
        #: For a compensation: the recorded result of the step it undoes.
        self.step_result = step_result
        #: the latest fraction done the step reported (heartbeat or progress)
        self.fraction: float | None = None
        self._progress_sink = progress_sink
        self.heartbeats_sent = 0
        base = logger or logging.getLogger("sagaline.step")
        self._logger = logging.LoggerAdapter(
            base, {"saga_id": saga_id, "step": step, "attempt": attempt, "task_id": task_id}
        )

    @property
    def saga_id(self) -> str:
        return self._saga_id

    @property
    def saga_type(self) -> str:
        return self._saga_type

    @property
    def step(self) -> str:
        return self._step

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def idempotency_key(self) -> str:
        return self._idempotency_key

    @property
    def deadline(self) -> datetime | None:
        return self._deadline

    @property
    def db(self) -> Any:
        """The step's connection, inside the transaction that records its reply.

        On the Kafka-only path there is none: using ``ctx.db`` raises
        :class:`NoDatabaseInStep`.
        """
        if self._db is None:
            return _NoDatabase(self._step)
        return self._db

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._logger

    @property
    def usage(self) -> Usage:
        """Usage reported so far."""
        with self._lock:
            return self._usage

    def remaining(self) -> float | None:
        """Seconds left until the deadline (None when there is none)."""
        if self._deadline is None:
            return None
        return (self._deadline - datetime.now(UTC)).total_seconds()

    def check_deadline(self) -> None:
        """Raise :class:`StepTimeout` when the deadline has passed."""
        left = self.remaining()
        if left is not None and left <= 0:
            raise StepTimeout(f"step {self._step!r} passed its deadline {self._deadline}")

    def heartbeat(self, progress: float | None = None, detail: str | None = None) -> None:
        """Report liveness (rate-limited); raises :class:`StepTimeout` past the deadline."""
        self.check_deadline()
        if progress is not None:
            self.fraction = progress
        now = time.monotonic()
        with self._lock:
            if now - self._last_beat < self._interval:
                return
            self._last_beat = now
            self.heartbeats_sent += 1
        if self._sink is not None:
            self._sink(progress, detail)

    def report_usage(
        self, *, llm_calls: int = 0, tokens_in: int = 0, tokens_out: int = 0, cost_micros: int = 0
    ) -> None:
        """Add LLM usage; it travels in the step's reply to the saga's budget."""
        with self._lock:
            u = self._usage
            self._usage = Usage(
                llm_calls=u.llm_calls + llm_calls,
                tokens_in=u.tokens_in + tokens_in,
                tokens_out=u.tokens_out + tokens_out,
                cost_micros=u.cost_micros + cost_micros,
            )

    def progress(
        self, message: str | None = None, fraction: float | None = None, partial: str | None = None
    ) -> None:
        """Publish advisory progress (a message, a fraction 0..1, a chunk of partial output)
        to the progress topic; never fails the step when publishing fails."""
        check_progress(message, fraction, partial)
        if fraction is not None:
            self.fraction = fraction
        if self._progress_sink is not None:
            self._progress_sink(message, fraction, partial)

    def settle_progress(self) -> None:
        """Called when the step returned: what it published gets a bounded time to reach
        Kafka before the reply is recorded (see :mod:`sagaline.consumers.progress`)."""
        settle = getattr(self._progress_sink, "settle", None)
        if callable(settle):
            settle()


class _NoDatabase:
    """``ctx.db`` of a step without a database: any use raises :class:`NoDatabaseInStep`."""

    def __init__(self, step: str) -> None:
        self._step = step

    def __getattr__(self, name: str) -> Any:
        raise NoDatabaseInStep(
            f"step {self._step!r} runs on the Kafka-only path (uses_db=False): "
            f"it has no database transaction (ctx.db.{name})"
        )

    def __bool__(self) -> bool:
        return False
