"""Saga definitions: a class per workflow, nodes in declaration order.

A saga is a subclass of :class:`Saga` parameterised by its pydantic data
model.  Its class body declares nodes, which run in declaration order:

* :func:`step` — a Python function a worker runs (``(self, ctx, data) -> Result``),
  with its compensation, retry policy and timeouts; ``on_result`` folds the
  recorded result into the saga data and ``route`` picks the next node
  (branches and loops).
* :func:`approval` / :func:`wait_for_signal` — a durable wait for a person
  or another system, with a timeout and what to do on approve, reject and
  timeout.
* :func:`sleep` — a durable sleep.
* :func:`agent` with :func:`tool` — an LLM picks the next tool in a loop
  until it answers.
* :func:`parallel` — steps that run at once, joined before the next node.
* :func:`child` — a child saga, whose outcome is the node's result.

Definitions are validated when the class is created
(:class:`~sagaline.orchestrator.core.errors.SagaDefinitionError`).  Nothing here performs
I/O; the decider (``sagaline.orchestrator.core.decider``) interprets the definition.
"""

from __future__ import annotations

import sys
import types
from datetime import timedelta
from typing import Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel

from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.nodes import (
    DONE,
    AgentSpec,
    ChildSpec,
    Done,
    Node,
    OutcomeAction,
    ParallelSpec,
    SignalInfo,
    SleepSpec,
    StepHandler,
    StepSpec,
    ToolSpec,
    WaitSpec,
    agent,
    approval,
    child,
    kind_of,
    parallel,
    parse_task_step,
    resolve_hints,
    sleep,
    step,
    tool,
    wait_for_signal,
)
from sagaline.orchestrator.core.nodes.base import TaskKind
from sagaline.orchestrator.core.policies import Budget, Retry

__all__ = [
    "DONE",
    "AgentSpec",
    "ChildSpec",
    "Done",
    "Node",
    "OutcomeAction",
    "ParallelSpec",
    "Saga",
    "SignalInfo",
    "SleepSpec",
    "StepHandler",
    "StepSpec",
    "ToolSpec",
    "WaitSpec",
    "agent",
    "approval",
    "child",
    "parallel",
    "parse_task_step",
    "resolve_hints",
    "sleep",
    "step",
    "tool",
    "wait_for_signal",
]

DataT = TypeVar("DataT", bound=BaseModel)


class Saga(Generic[DataT]):
    """Base class of saga definitions: ``class Refund(Saga[RefundData])``.

    Class attributes: ``type_name`` (stable name on the wire, required),
    ``version`` (bump for incompatible changes; in-flight sagas keep theirs),
    ``deadline`` (whole-saga timeout: expiry compensates), ``budget``
    (:class:`Budget`), ``compensation_retry`` (default retry policy of
    compensations).  Instances are created by the runtime with no arguments.
    """

    type_name: ClassVar[str]
    version: ClassVar[int] = 1
    deadline: ClassVar[timedelta | None] = None
    budget: ClassVar[Budget | None] = None
    compensation_retry: ClassVar[Retry] = Retry(
        max_attempts=10, initial=timedelta(seconds=1), max_interval=timedelta(minutes=5)
    )
    data_type: ClassVar[type[BaseModel]]
    sequence: ClassVar[tuple[Node, ...]]
    nodes: ClassVar[dict[str, Node]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from sagaline.orchestrator.core.validation import build_definition

        # names visible where the class statement runs (models defined in a function)
        localns: dict[str, Any] = {}
        frame: types.FrameType | None = sys._getframe(1)
        for _ in range(4):
            if frame is None:
                break
            for key, value in frame.f_locals.items():
                localns.setdefault(key, value)
            frame = frame.f_back
        build_definition(cast("type[Saga[Any]]", cls), localns)

    # -- lookups ------------------------------------------------------------

    @classmethod
    def node(cls, name: str) -> Node:
        """The node called ``name`` (steps, waits, tools, branches, ...)."""
        try:
            return cls.nodes[name]
        except KeyError:
            raise SagaDefinitionError(f"{cls.type_name} has no node {name!r}") from None

    @classmethod
    def next_node(cls, name: str | None) -> Node | None:
        """The node after ``name`` in declaration order (``None``: the first node)."""
        if name is None:
            return cls.sequence[0] if cls.sequence else None
        for i, n in enumerate(cls.sequence):
            if n.name == name:
                return cls.sequence[i + 1] if i + 1 < len(cls.sequence) else None
        raise SagaDefinitionError(f"{name!r} is not in the sequence of {cls.type_name}")

    @classmethod
    def handler_for(
        cls,
        kind: TaskKind,
        step: str,
        *,
        instance: Saga[Any] | None = None,
    ) -> StepHandler:
        """The handler a worker runs for a task (see :func:`parse_task_step` for names)."""
        saga = instance if instance is not None else cls()
        node = cls.nodes.get(parse_task_step(step)[0])
        if node is None:
            raise SagaDefinitionError(f"{cls.type_name} has no {kind} handler for task {step!r}")
        return kind_of(node).handler(cls, saga, node, kind, step)

    @classmethod
    def mermaid(cls) -> str:
        """A Mermaid flowchart of this definition."""
        from sagaline.orchestrator.core.diagram import to_mermaid

        text: str = to_mermaid(cls)
        return text
