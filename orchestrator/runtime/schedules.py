"""Schedules in the Kafka runtime: the logic that decides them, and their declaration.

:class:`ScheduledLogic` wraps the saga logic: an input whose saga id is a
schedule's (``schedule:<name>``) is decided by
:func:`sagaline.orchestrator.core.schedule_decide.decide_schedule`, every other
input by the wrapped logic.  A schedule's snapshot is a ``SagaState`` on the
state topic and its next tick a timer in it, so the engine restores, times,
decides and commits schedules exactly as it does sagas: the tick's
``StartSaga`` commands and the schedule's new cursor commit in one Kafka
transaction (a crash before the commit leaves neither; after it, both).

:func:`declare_schedules` sends each schedule's declaring ``StartSaga`` when
an orchestrator process starts (the first one decided sets when the schedule
began; the others are no-ops).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.schedule import Schedule, ScheduleError, schedule_name_of
from sagaline.orchestrator.core.schedule_decide import decide_schedule, declaration, tick_input
from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.kafka_config import client_producer_config
from sagaline.orchestrator.runtime.ports import Codec, Outcome, Outgoing, SagaLogic, TimerSpec
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.schemas.base import Record
from sagaline.schemas.state import SagaState

__all__ = ["ScheduledLogic", "declare_schedules", "logic_with_schedules", "split_app"]

log = logging.getLogger(__name__)


def split_app(obj: object) -> tuple[object, list[Schedule[Any]]]:
    """An ``--app`` object without its schedules, and the schedules.

    A list may mix ``Saga`` classes and :class:`Schedule` objects; a
    schedule's saga class joins the sagas when it is not listed.
    """
    if isinstance(obj, Schedule):
        return [obj.saga], [obj]
    if isinstance(obj, SagaRegistry | str | bytes) or not isinstance(obj, Iterable):
        return obj, []
    items: list[Any] = list(obj)
    schedules = [i for i in items if isinstance(i, Schedule)]
    if not schedules:
        return items, []
    sagas: list[Any] = [i for i in items if not isinstance(i, Schedule)]
    for schedule in schedules:
        if schedule.saga not in sagas:
            sagas.append(schedule.saga)
    return sagas, schedules


def logic_with_schedules(logic: SagaLogic, schedules: Sequence[Schedule[Any]]) -> SagaLogic:
    """``logic`` itself without schedules, else a :class:`ScheduledLogic` around it."""
    return ScheduledLogic(logic, schedules) if schedules else logic


def _as_state(state: Record | None) -> SagaState | None:
    if state is not None and not isinstance(state, SagaState):
        raise TypeError(f"expected a SagaState, got {type(state).__name__}")
    return state


class ScheduledLogic:
    """Schedules decided by the pure core's schedule rules, sagas by ``inner``."""

    def __init__(self, inner: SagaLogic, schedules: Iterable[Schedule[Any]]) -> None:
        self.inner = inner
        self.schedules: dict[str, Schedule[Any]] = {}
        for schedule in schedules:
            if schedule.name in self.schedules:
                raise ScheduleError(f"two schedules are named {schedule.name!r}")
            self.schedules[schedule.name] = schedule
        self._undeclared: set[str] = set()

    @property
    def state_type(self) -> type[Record]:
        return self.inner.state_type

    def _schedule_of(self, saga_id: str) -> tuple[bool, Schedule[Any] | None]:
        """``(is a schedule id, the schedule declared under that name)``."""
        name = schedule_name_of(saga_id)
        if name is None:
            return False, None
        return True, self.schedules.get(name)

    def decide(self, state: Record | None, message: Record) -> Outcome:
        envelope = getattr(message, "envelope", None)
        saga_id = getattr(envelope, "saga_id", None)
        if not isinstance(saga_id, str):
            return self.inner.decide(state, message)
        is_schedule, schedule = self._schedule_of(saga_id)
        if not is_schedule:
            return self.inner.decide(state, message)
        if schedule is None:
            raise InputRejected(
                "UnknownSchedule", f"no schedule {saga_id!r} is declared in this orchestrator's app"
            )
        try:
            decision = decide_schedule(schedule, _as_state(state), message)
        except ScheduleError as exc:
            raise InputRejected("ScheduleError", str(exc)) from exc
        if decision.rejected is not None or decision.state is None:
            raise InputRejected("Rejected", decision.rejected or "no schedule state")
        for start in decision.starts:
            log.info("schedule %s starts saga %s", schedule.name, start.envelope.saga_id)
        return Outcome(
            state=decision.state,
            outgoing=tuple(Outgoing("commands", start) for start in decision.starts),
        )

    def timers(self, state: Record) -> Sequence[TimerSpec]:
        current = _as_state(state)
        assert current is not None
        is_schedule, schedule = self._schedule_of(current.saga_id)
        if not is_schedule:
            return self.inner.timers(state)
        if schedule is None:
            if current.saga_id not in self._undeclared:
                self._undeclared.add(current.saga_id)
                log.warning("%s is not declared in this app: it stays as it is", current.saga_id)
            return []
        return [TimerSpec(t.timer_id, t.due_at) for t in current.timers]

    def timer_input(self, state: Record, timer_id: str, now: datetime) -> Record | None:
        current = _as_state(state)
        if current is not None and schedule_name_of(current.saga_id) is not None:
            return tick_input(current, now)
        return self.inner.timer_input(state, timer_id, now)

    def is_terminal(self, state: Record) -> bool:
        return self.inner.is_terminal(state)

    def finished_at(self, state: Record) -> datetime | None:
        return self.inner.finished_at(state)

    def __getattr__(self, name: str) -> Any:
        # anything else the engine or the tools ask of the saga logic (its registry, ...)
        return getattr(self.inner, name)


def declare_schedules(
    settings: Settings, schedules: Iterable[Schedule[Any]], codec: Codec, timeout: float = 30.0
) -> int:
    """Send each schedule's declaring ``StartSaga``; return how many were confirmed.

    Raises ``ScheduleError`` when Kafka did not confirm one within ``timeout``.
    """
    todo = list(schedules)
    if not todo:
        return 0
    # declared by the orchestrator process: signed as the orchestrator (when signing is on)
    producer = SignedProducer(
        client_producer_config(settings.kafka_bootstrap_servers), "orchestrator"
    )
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    now = datetime.now(UTC)
    for schedule in todo:
        record = declaration(schedule, at=now, message_id=str(uuid.uuid4()))
        producer.produce(
            settings.topics.commands,
            key=schedule.schedule_id.encode("utf-8"),
            value=codec.encode(record),
            on_delivery=delivered,
        )
    left = producer.flush(timeout)
    if left or failures:
        why = "; ".join(failures) or f"{left} not confirmed within {timeout:g} s"
        raise ScheduleError(f"cannot declare the schedules: {why}")
    log.info("declared schedules %s", ", ".join(s.name for s in todo))
    return len(todo)
