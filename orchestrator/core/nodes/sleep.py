"""The sleep node: a durable sleep (a timer in the saga's state; no thread waits)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from sagaline.orchestrator.core.nodes.base import (
    Node,
    NodeKind,
    check_arity,
    mermaid_label,
    register,
)
from sagaline.schemas.events import SleepEnded, SleepStarted
from sagaline.schemas.trusted import make

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.orchestrator.core.saga import Saga
    from sagaline.schemas.state import Timer

__all__ = ["SleepKind", "SleepSpec", "sleep"]


class SleepSpec(Node):
    """A durable sleep (a timer in saga state; no thread waits)."""

    kind = "sleep"

    def __init__(self, duration: timedelta | Callable[..., timedelta], name: str | None) -> None:
        super().__init__(name)
        self.duration = duration

    def duration_for(self, saga: Saga[Any], data: BaseModel) -> timedelta:
        if isinstance(self.duration, timedelta):
            return self.duration
        return self.duration(saga, data)


def sleep(
    duration: timedelta | Callable[[Any, Any], timedelta], *, name: str | None = None
) -> SleepSpec:
    """Sleep for ``duration`` (or ``duration(self, data)``) before the next node."""
    return SleepSpec(duration, name)


class SleepKind(NodeKind[SleepSpec]):
    kind = "sleep"

    def validate(self, cls: type[Saga[Any]], node: SleepSpec, localns: dict[str, Any]) -> None:
        if not isinstance(node.duration, timedelta):
            check_arity(node.duration, "self, data", f"{cls.__qualname__}.{node.name} duration")

    def drive(self, ctx: DecisionContext, node: SleepSpec) -> bool:
        if ctx.s.sleeping_until is None:
            until = ctx.now + node.duration_for(ctx.saga, ctx.data())
            ctx.emit(make(SleepStarted, at=ctx.now, name=node.name, until=until))
        return False

    def on_timer(self, ctx: DecisionContext, node: SleepSpec, timer: Timer) -> None:
        ctx.emit(make(SleepEnded, at=ctx.now, name=node.name))
        ctx.enter(ctx.defn.next_node(node.name), previous=node.name, via="slept")

    def mermaid_nodes(self, node: SleepSpec) -> list[str]:
        return [f'{node.name}(["sleep: {mermaid_label(node.name)}"])']


register(SleepKind())
