"""A minimal, real saga logic for exercising the Kafka runtime on its own.

``ChainLogic`` runs N steps in order: ``StartSaga`` dispatches ``s1``; each
matching ``StepSucceeded`` dispatches the next step; the last one completes
the saga.  Every dispatch records a step-timeout timer in the state; when it
fires the step is dispatched again with the next attempt (same idempotency
key).  Stale and duplicate replies change nothing.  The journal records each
decided input.  It is pure (time comes from the input), like the decider.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.ports import Outcome, Outgoing, TimerSpec
from sagaline.schemas.base import Envelope, Payload, Record
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.replies import StepSucceeded
from sagaline.schemas.state import SagaState, StepState, Timer
from sagaline.schemas.tasks import ExecuteStep
from sagaline.schemas.timers import TimerFired


def _mid(*parts: object) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:32]


class ChainLogic:
    """N sequential no-op steps with a step timeout."""

    def __init__(self, steps: int = 3, step_timeout_s: float = 2.0) -> None:
        self.steps = [f"s{i + 1}" for i in range(steps)]
        self.step_timeout = timedelta(seconds=step_timeout_s)

    @property
    def state_type(self) -> type[Record]:
        return SagaState

    def timers(self, state: Record) -> Sequence[TimerSpec]:
        assert isinstance(state, SagaState)
        return [TimerSpec(t.timer_id, t.due_at) for t in state.timers]

    def timer_input(self, state: Record, timer_id: str, now: datetime) -> Record | None:
        assert isinstance(state, SagaState)
        for t in state.timers:
            if t.timer_id == timer_id:
                return TimerFired(
                    envelope=Envelope(
                        message_id=_mid("timer", state.saga_id, timer_id),
                        saga_id=state.saga_id,
                        saga_type=state.saga_type,
                        saga_version=state.saga_version,
                        occurred_at=now,
                    ),
                    timer_id=timer_id,
                    kind=t.kind,
                    due_at=t.due_at,
                    step=t.step,
                    attempt=t.attempt,
                )
        return None

    def is_terminal(self, state: Record) -> bool:
        assert isinstance(state, SagaState)
        return state.is_terminal

    def finished_at(self, state: Record) -> datetime | None:
        assert isinstance(state, SagaState)
        return state.finished_at

    def _dispatch(
        self, state: SagaState, step: str, attempt: int, now: datetime, cause: str
    ) -> tuple[SagaState, Outgoing]:
        key = _mid("idem", state.saga_id, step)
        task_id = _mid("task", state.saga_id, step, attempt)
        due = now + self.step_timeout
        timer = Timer(
            timer_id=f"timeout:{step}:{attempt}",
            kind="step_timeout",
            due_at=due,
            step=step,
            attempt=attempt,
        )
        steps = dict(state.steps)
        steps[step] = StepState(
            name=step,
            status="running",
            attempt=attempt,
            idempotency_key=key,
            task_id=task_id,
            dispatched_at=now,
            deadline_at=due,
        )
        new = state.model_copy(
            update={"node": step, "steps": steps, "timers": [timer], "updated_at": now}
        )
        task = ExecuteStep(
            envelope=Envelope(
                message_id=_mid("msg", task_id),
                saga_id=state.saga_id,
                saga_type=state.saga_type,
                saga_version=state.saga_version,
                occurred_at=now,
                causation_id=cause,
            ),
            step=step,
            attempt=attempt,
            idempotency_key=key,
            task_id=task_id,
            args=state.data,
            deadline_at=due,
        )
        return new, Outgoing("tasks", task)

    def decide(self, state: Record | None, message: Record) -> Outcome:
        envelope: Envelope = message.envelope  # type: ignore[attr-defined]
        now = envelope.occurred_at
        if isinstance(message, StartSaga):
            if state is not None:
                return Outcome(state, journal=(message,))
            fresh = SagaState(
                saga_id=envelope.saga_id,
                saga_type=envelope.saga_type,
                saga_version=envelope.saga_version,
                data=message.data,
                started_at=now,
                updated_at=now,
                input_sha256=message.input_sha256,
            )
            new, out = self._dispatch(fresh, self.steps[0], 1, now, envelope.message_id)
            return Outcome(new, journal=(message,), outgoing=(out,))
        if state is None:
            raise InputRejected("UnknownSaga", f"no saga {envelope.saga_id} on this partition")
        assert isinstance(state, SagaState)
        if isinstance(message, StepSucceeded):
            current = state.steps.get(message.step)
            if (
                state.is_terminal
                or current is None
                or current.status != "running"
                or state.node != message.step
            ):
                return Outcome(state, journal=(message,))  # duplicate or stale
            steps = dict(state.steps)
            steps[message.step] = current.model_copy(
                update={"status": "succeeded", "completed_at": now}
            )
            index = self.steps.index(message.step)
            new = state.model_copy(update={"steps": steps, "timers": [], "updated_at": now})
            if index + 1 == len(self.steps):
                done = new.model_copy(
                    update={"status": "completed", "finished_at": now, "node": None}
                )
                return Outcome(done, journal=(message,))
            new, out = self._dispatch(new, self.steps[index + 1], 1, now, envelope.message_id)
            return Outcome(new, journal=(message,), outgoing=(out,))
        if isinstance(message, TimerFired):
            if message.timer_id not in {t.timer_id for t in state.timers} or message.step is None:
                return Outcome(state, journal=(message,))
            attempt = (message.attempt or 0) + 1
            new, out = self._dispatch(state, message.step, attempt, now, envelope.message_id)
            return Outcome(new, journal=(message,), outgoing=(out,))
        return Outcome(state, journal=(message,))


def make_logic() -> ChainLogic:
    return ChainLogic(steps=3, step_timeout_s=2.0)


class JsonCodec:
    """Record ⇄ JSON with the record type name (stand-in for the Avro codec)."""

    def encode(self, record: Record) -> bytes:
        body = json.loads(record.model_dump_json())
        return json.dumps({"type": type(record).__name__, "body": body}).encode()

    def decode(self, data: bytes, expected: tuple[type[Record], ...]) -> Record:
        doc = json.loads(data)
        for cls in expected:
            if cls.__name__ == doc["type"]:
                return cls.model_validate(doc["body"])
        raise ValueError(f"unexpected record type {doc.get('type')!r}")


def make_codec() -> JsonCodec:
    return JsonCodec()


def start_command(
    saga_id: str, *, saga_type: str = "chain", when: datetime, blob: bytes = b"{}"
) -> StartSaga:
    data = Payload(type_name="ChainData", data=blob)
    return StartSaga(
        envelope=Envelope(
            message_id=_mid("start", saga_id),
            saga_id=saga_id,
            saga_type=saga_type,
            occurred_at=when,
        ),
        data=data,
        input_sha256=hashlib.sha256(blob).hexdigest(),
    )


# keep Payload import used in type positions for readers of this module
__all__ = ["ChainLogic", "JsonCodec", "make_codec", "make_logic", "start_command"]
