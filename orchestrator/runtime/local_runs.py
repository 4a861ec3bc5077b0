"""Local steps: tasks the orchestrator runs itself, inside the batch that dispatched them.

The decider is unchanged: it dispatches a local step's task like any other.  The engine hands
each decision's outgoing records to :class:`Outbound`, which produces them, except the tasks
that the :class:`LocalSteps` port claims (``@step(local=True)``): those are held for the batch.
After the batch's inputs and timers are decided, :meth:`Outbound.drain` runs the held tasks
through the port, decides each reply like an input (so the journal records it as an input,
in the same Kafka transaction as the decisions around it), and repeats with the tasks those
decisions dispatched, until no local work is left.

Bounds: a batch runs at most ``LocalLimits.max_runs`` local tasks (``per_saga`` of one
saga: a loop of local steps) and spends at most ``LocalLimits.budget_s`` seconds running
them; the tasks beyond a bound are produced to the tasks topic, where a worker runs them
(the worker's inbox is the same table, so a database step stays exactly-once on either
path).  Each task has a timeout (the step's own, else the port's default); the port answers
a task past it with a retryable ``StepFailed``.

The runtime imports no worker code: the port is implemented in
``sagaline.consumers.local_steps`` and wired in by ``sagaline orchestrator run``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from opentelemetry.context import Context

from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime import metrics
from sagaline.orchestrator.runtime.batch import Batch
from sagaline.orchestrator.runtime.deadletter import timer_dead_letter
from sagaline.orchestrator.runtime.intake import saga_id_of, with_trace
from sagaline.orchestrator.runtime.ports import Codec, Outgoing
from sagaline.orchestrator.runtime.telemetry import headers_from_carrier
from sagaline.orchestrator.runtime.transactions import Produce
from sagaline.schemas.base import Record
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = ["LocalLimits", "LocalSteps", "LocalTask", "Outbound"]

log = logging.getLogger(__name__)

Task = ExecuteStep | CompensateStep
#: the engine's ``_decide(batch, saga_id, partition, record, parent)``
Decide = Callable[[Batch, str, int, Record, Context | None], None]


class LocalSteps(Protocol):
    """Runs the tasks of local steps in the orchestrator process."""

    def is_local(self, task: Task) -> bool:
        """Whether ``task`` belongs to a step declared ``local=True``."""
        ...

    def run_tasks(self, tasks: Sequence[Task], budget_s: float) -> list[Record | None]:
        """Run ``tasks`` (concurrently) and return one reply per task, in order.

        A step's failure is its ``StepFailed`` / ``CompensationFailed`` reply, never an
        exception; a task still running after its timeout (at most ``budget_s``) is answered
        with a retryable failure of type ``StepTimeout``. ``None``: the task never started
        (it waited for a thread past that time, and will not start): it goes to the workers.
        """
        ...


@dataclass(frozen=True)
class LocalLimits:
    """How much local work one batch (one Kafka transaction) may do."""

    max_runs: int = 10_000
    budget_s: float = 10.0
    #: local tasks of one saga in one batch (a loop of local steps)
    per_saga: int = 1_000


@dataclass(frozen=True)
class LocalTask:
    """A local task held for the batch that dispatched it."""

    saga_id: str
    partition: int
    task: Task
    carrier: dict[str, str] = field(default_factory=dict)


class Outbound:
    """Produces a batch's outgoing records and runs its local tasks."""

    def __init__(
        self,
        names: TopicNames,
        codec: Codec,
        local: LocalSteps | None,
        rejected_by: str,
        limits: LocalLimits | None = None,
    ) -> None:
        self.names = names
        self.codec = codec
        self.local = local
        self.rejected_by = rejected_by
        self.limits = limits or LocalLimits()
        self.destinations = {"tasks": names.tasks, "commands": names.commands}
        self.destinations["replies"] = names.replies
        #: local tasks run and local tasks sent to the workers (over the process lifetime)
        self.runs = 0
        self.overflowed = 0
        self._held: list[LocalTask] = []
        self._held_for: Batch | None = None

    def route(
        self,
        batch: Batch,
        saga_id: str,
        partition: int,
        outgoing: Sequence[Outgoing],
        carrier: dict[str, str],
    ) -> None:
        """Stage ``outgoing`` in ``batch``: local tasks are held, the rest produced."""
        for out in outgoing:
            rec = with_trace(out.record, carrier)
            if (
                self.local is not None
                and out.destination == "tasks"
                and isinstance(rec, ExecuteStep | CompensateStep)
                and self.local.is_local(rec)
            ):
                if self._held_for is not batch:
                    self._held, self._held_for = [], batch
                self._held.append(LocalTask(saga_id, partition, rec, carrier))
                continue
            self._produce(batch, out.destination, rec, carrier)

    def _produce(
        self, batch: Batch, destination: str, rec: Record, carrier: dict[str, str]
    ) -> None:
        batch.produces.append(
            Produce(
                self.destinations.get(destination, destination),
                saga_id_of(rec).encode("utf-8"),
                self.codec.encode(rec),
                headers=headers_from_carrier(carrier) or None,
            )
        )

    def drain(self, batch: Batch, decide: Decide) -> None:
        """Run the held local tasks and decide their replies until none is left."""
        if self._held_for is not batch or self.local is None:
            return
        local = self.local
        started = time.monotonic()
        runs = 0
        per_saga: Counter[str] = Counter()
        try:
            while self._held:
                held, self._held = self._held, []
                left = self.limits.budget_s - (time.monotonic() - started)
                room = max(0, self.limits.max_runs - runs) if left > 0 else 0
                now: list[LocalTask] = []
                for item in held:
                    per_saga[item.saga_id] += 1
                    if len(now) < room and per_saga[item.saga_id] <= self.limits.per_saga:
                        now.append(item)
                    else:
                        self._overflow(batch, item)
                if not now:
                    continue
                replies = local.run_tasks([item.task for item in now], left)
                runs += len(now)
                for item, reply in zip(now, replies, strict=True):
                    if reply is None:
                        self._overflow(batch, item)
                    else:
                        self._decide_reply(batch, decide, item, reply)
        finally:
            self.runs += runs
            self._held, self._held_for = [], None

    def _overflow(self, batch: Batch, item: LocalTask) -> None:
        """A task past the batch's bounds goes to the workers (same inbox, same key)."""
        self.overflowed += 1
        log.warning(
            "local step %s of saga %s: the batch's local-step bound is reached; "
            "sent to the workers",
            item.task.step,
            item.saga_id,
        )
        self._produce(batch, "tasks", item.task, item.carrier)

    def _decide_reply(self, batch: Batch, decide: Decide, item: LocalTask, reply: Record) -> None:
        try:
            decide(batch, item.saga_id, item.partition, reply, None)
        except Exception as exc:
            # as for a worker's reply the decider refuses: dead-lettered, the saga waits
            error_type, reason = type(exc).__name__, str(exc)
            log.warning(
                "dead-lettering the local reply of %s: %s: %s",
                item.task.task_id,
                error_type,
                reason,
            )
            letter = timer_dead_letter(
                f"{self.names.state}#local",
                item.partition,
                item.saga_id,
                self.codec.encode(reply),
                reason=reason,
                error_type=getattr(exc, "error_type", error_type),
                rejected_by=self.rejected_by,
                now=datetime.now(UTC),
            )
            batch.dead_letters += metrics.count_dead_letter("orchestrator", letter.error_type)
            batch.produces.append(
                Produce(self.names.deadletter, letter.key or b"", self.codec.encode(letter))
            )
