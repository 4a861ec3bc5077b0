"""A step's ``ctx.progress(...)`` on the worker: :class:`TaskProgress`.

Each task attempt numbers its progress records (``seq`` from 1) and hands
them to the worker's one :class:`~sagaline.orchestrator.runtime.progress.ProgressPublisher`
(fire-and-forget, bounded).  When the step returns (or raises), the runner
calls :meth:`TaskProgress.settle`: if the step published anything, the
publisher is flushed for at most ``SETTLE_S`` before the reply is recorded,
so a reader sees a step's progress before the state that follows it.  A
failure to publish never reaches the step.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from sagaline.consumers.context import ProgressSink
from sagaline.consumers.wire import Codec
from sagaline.consumers.worker_options import WorkerOptions
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.core.context import check_progress
from sagaline.orchestrator.runtime.progress import ProgressPublisher
from sagaline.schemas.progress import MAX_PROGRESS_TEXT, ProgressReported
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = ["SETTLE_S", "ProgressSink", "ProgressSinks", "TaskProgress"]

log = logging.getLogger("sagaline.progress")

#: The longest a finished step waits for its progress to reach Kafka (seconds); it
#: waits only when the step published something and delivery is not degraded.
SETTLE_S = 2.0

Task = ExecuteStep | CompensateStep


def _cut(text: str | None) -> str | None:
    return text if text is None or len(text) <= MAX_PROGRESS_TEXT else text[:MAX_PROGRESS_TEXT]


class TaskProgress:
    """The progress of one task attempt: ``sink(message, fraction, partial)``."""

    def __init__(self, publisher: ProgressPublisher, task: Task) -> None:
        self._publisher = publisher
        self._task = task
        self._lock = threading.Lock()
        self.sent = 0

    def __call__(self, message: str | None, fraction: float | None, partial: str | None) -> None:
        check_progress(message, fraction, partial)
        with self._lock:
            self.sent += 1
            seq = self.sent
        env = self._task.envelope
        record = ProgressReported(
            saga_id=env.saga_id,
            saga_type=env.saga_type,
            step=self._task.step,
            attempt=self._task.attempt,
            task_id=self._task.task_id,
            seq=seq,
            at=datetime.now(UTC),
            message=_cut(message),
            fraction=fraction,
            partial=_cut(partial),
        )
        try:
            self._publisher.publish(record)
        except Exception as exc:
            log.warning("progress of %s not published: %s", self._task.step, exc)

    def settle(self, timeout: float = SETTLE_S) -> None:
        """Give what the step published up to ``timeout`` s to reach Kafka (if anything)."""
        if self.sent:
            try:
                self._publisher.flush(timeout)
            except Exception as exc:
                log.warning("progress of %s not flushed: %s", self._task.step, exc)


class ProgressSinks:
    """The worker's progress: one publisher, a :class:`TaskProgress` per task (``sinks(task)``)."""

    def __init__(
        self, bootstrap_servers: str, topics: TopicNames, codec: Codec, options: WorkerOptions
    ) -> None:
        self.publisher = ProgressPublisher(
            bootstrap_servers,
            topics.progress,
            codec,
            extra=options.producer_config,
            client_id=f"{options.group_id}-progress",
        )
        # connected before the first step runs, off the worker's start path
        threading.Thread(target=self.publisher.warm, name="progress-warm", daemon=True).start()

    def __call__(self, task: Task) -> TaskProgress:
        return TaskProgress(self.publisher, task)

    def close(self) -> None:
        """Deliver what is queued (bounded) and stop."""
        self.publisher.close()
