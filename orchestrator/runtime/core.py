"""Adapters from the pure core and the Avro codec to the runtime's ports.

:class:`CoreLogic` runs ``sagaline.orchestrator.core.decider.decide`` with the definition
registered for the saga's type and version, chains a journal entry per
decision (``sagaline.orchestrator.core.journal.record_decision``) and turns rejected inputs
into :class:`InputRejected` (dead-lettered).  :data:`AvroCodec` is
``sagaline.schemas.codec``'s shared codec.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sagaline.orchestrator.core.decider import Input, decide, pending_timers, timer_input
from sagaline.orchestrator.core.errors import UnknownSagaType
from sagaline.orchestrator.core.journal import record_decision
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga
from sagaline.orchestrator.runtime.data_keys import saga_scope
from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.limits import is_limiter_input, limiter_outcome
from sagaline.orchestrator.runtime.ports import Outcome, Outgoing, TimerSpec
from sagaline.schemas.base import Record
from sagaline.schemas.codec import default_codec
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.personal import saga_keys
from sagaline.schemas.state import SagaState

__all__ = ["AvroCodec", "CoreLogic"]


#: ``AvroCodec()`` is the shared :func:`sagaline.schemas.codec.default_codec` (the one
#: codec; the name is kept for callers that built the former adapter)
AvroCodec = default_codec


def _as_state(state: Record | None) -> SagaState | None:
    if state is not None and not isinstance(state, SagaState):
        raise TypeError(f"expected a SagaState, got {type(state).__name__}")
    return state


class CoreLogic:
    """The pure decider behind :class:`~sagaline.orchestrator.runtime.ports.SagaLogic`."""

    def __init__(self, registry: SagaRegistry) -> None:
        self.registry = registry

    @classmethod
    def from_object(cls, obj: object) -> CoreLogic:
        """Build from a ``SagaRegistry``, a ``Saga`` class or an iterable of them."""
        if isinstance(obj, SagaRegistry):
            return cls(obj)
        if isinstance(obj, type) and issubclass(obj, Saga):
            return cls(SagaRegistry([obj]))
        if isinstance(obj, Iterable):
            items: list[Any] = list(obj)
            if all(isinstance(i, type) and issubclass(i, Saga) for i in items):
                return cls(SagaRegistry(items))
        raise TypeError(f"cannot build saga logic from {obj!r}")

    @property
    def state_type(self) -> type[Record]:
        return SagaState

    def decide(self, state: Record | None, message: Record) -> Outcome:
        if is_limiter_input(message, state):
            return limiter_outcome(state, message)  # a concurrency/rate limiter's slots
        before = _as_state(state)
        envelope = getattr(message, "envelope", None)
        if envelope is None:
            raise InputRejected("NoEnvelope", f"{type(message).__name__} has no envelope")
        if before is None and not isinstance(message, StartSaga):
            raise InputRejected(
                "UnknownSaga", f"no saga {envelope.saga_id!r} for {type(message).__name__}"
            )
        saga_type = before.saga_type if before is not None else envelope.saga_type
        version = before.saga_version if before is not None else envelope.saga_version
        try:
            definition = self.registry.get(saga_type, version)
        except UnknownSagaType as exc:
            raise InputRejected("UnknownSagaType", str(exc)) from exc
        with saga_keys(saga_scope(envelope.saga_id)):  # personal fields: the saga's data key
            decision = decide(definition, before, cast(Input, message))
        if decision.rejected is not None:
            raise InputRejected("Rejected", decision.rejected)
        entry, after = record_decision(before, cast(Input, message), decision)
        if after is None:
            raise InputRejected("NoSaga", f"no saga {envelope.saga_id} and the input starts none")
        return Outcome(
            state=after,
            journal=(entry,) if entry is not None else (),
            outgoing=tuple(Outgoing(o.destination, o.record) for o in decision.outgoing),
        )

    def timers(self, state: Record) -> Sequence[TimerSpec]:
        return [TimerSpec(t.timer_id, t.due_at) for t in pending_timers(_as_state(state))]

    def timer_input(self, state: Record, timer_id: str, now: datetime) -> Record | None:
        current = _as_state(state)
        if current is None:
            return None
        for timer in current.timers:
            if timer.timer_id == timer_id:
                return timer_input(current, timer, now)
        return None

    def is_terminal(self, state: Record) -> bool:
        current = _as_state(state)
        return current is not None and current.is_terminal

    def finished_at(self, state: Record) -> datetime | None:
        current = _as_state(state)
        return current.finished_at if current is not None else None
