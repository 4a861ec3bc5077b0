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

import inspect
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast, overload

from pydantic import BaseModel

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn, ToolInfo
from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.policies import Budget, Retry

__all__ = [
    "DONE",
    "AgentSpec",
    "ChildSpec",
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
F = TypeVar("F", bound=Callable[..., Any])

#: Returned by a ``route`` hook: the saga is done (skip the remaining nodes).
DONE = "__done__"

#: What a wait does on approve / reject / timeout: continue with the next
#: node, compensate, fail (needs a person), or go to the named node.
OutcomeAction = str

_ACTIONS = frozenset({"continue", "compensate", "fail"})


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Any = _Unset()


class Node:
    """A named element of a saga definition."""

    kind: ClassVar[str] = "node"

    def __init__(self, name: str | None = None) -> None:
        self.name: str = name or ""
        self.explicit_name = name is not None
        self.owner: type[Saga[Any]] | None = None

    def __set_name__(self, owner: type[Any], name: str) -> None:
        if not self.explicit_name and self.owner is None:
            self.name = name
            self.explicit_name = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def references(self) -> list[str]:
        """Names of other nodes this node refers to (validated at class creation)."""
        return []


def _ref_name(target: str | Node) -> str:
    return target.name if isinstance(target, Node) else target


class _FunctionNode(Node):
    """A node backed by a method; calling the attribute on an instance calls the method."""

    def __init__(self, fn: Callable[..., Any], name: str | None) -> None:
        super().__init__(name)
        self.name = name or fn.__name__
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return self.fn.__get__(instance, owner)


class StepSpec(_FunctionNode):
    """A step: ``fn(self, ctx, data) -> Result | None`` run by a worker."""

    kind = "step"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None,
        compensate: Callable[..., Any] | Any | None,
        retry: Retry,
        timeout: timedelta | None,
        heartbeat_timeout: timedelta | None,
        pivot: bool,
        compensable_after_pivot: str | None,
        to: str | None,
        on_failure: Literal["compensate", "pause", "fail"],
        result: type[BaseModel] | Any | None,
        compensation_retry: Retry | None,
        uses_db: bool = True,
    ) -> None:
        super().__init__(fn, name)
        self.uses_db = uses_db
        self.compensate_declared = compensate is not _UNSET
        self.compensate_fn: Callable[..., Any] | None = None if compensate is _UNSET else compensate
        self.retry = retry
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.pivot = pivot
        self.compensable_after_pivot = compensable_after_pivot
        self.to = to
        self.on_failure = on_failure
        self.explicit_result_set = result is not _UNSET
        self.explicit_result: type[BaseModel] | None = None if result is _UNSET else result
        self.compensation_retry = compensation_retry
        self.result_type: type[BaseModel] | None = None
        self.on_result_fn: Callable[..., Any] | None = None
        self.route_fn: Callable[..., Any] | None = None
        self.route_targets: tuple[str, ...] = ()
        self.in_parallel: str | None = None

    @property
    def compensable(self) -> bool:
        return self.compensate_fn is not None

    def on_result(self, fn: F) -> F:
        """Register ``fn(self, data, result) -> data``: fold the recorded result into the data."""
        self.on_result_fn = fn
        return fn

    def compensation(self, fn: F) -> F:
        """Register ``fn(self, ctx, data) -> None`` that undoes this step."""
        if self.compensate_declared and self.compensate_fn is None:
            raise SagaDefinitionError(f"step {self.name!r} declared compensate=None")
        self.compensate_fn = fn
        self.compensate_declared = True
        return fn

    def route(self, *targets: str | Node) -> Callable[[F], F]:
        """Register ``fn(self, data) -> node name | DONE | None`` choosing the next node.

        ``targets`` lists every node the hook may return (checked when the
        class is created); ``None`` continues with the next node in order.
        """
        names = tuple(_ref_name(t) for t in targets)

        def register(fn: F) -> F:
            self.route_fn = fn
            self.route_targets = names
            return fn

        return register

    def references(self) -> list[str]:
        return [t for t in self.route_targets if t != DONE]


@overload
def step(fn: F, /) -> StepSpec: ...


@overload
def step(
    *,
    name: str | None = None,
    compensate: Callable[..., Any] | Any | None = _UNSET,
    retry: Retry | None = None,
    timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    pivot: bool = False,
    compensable_after_pivot: str | None = None,
    to: str | None = None,
    on_failure: Literal["compensate", "pause", "fail"] = "compensate",
    result: type[BaseModel] | Any | None = _UNSET,
    compensation_retry: Retry | None = None,
    uses_db: bool = True,
) -> Callable[[Callable[..., Any]], StepSpec]: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    compensate: Callable[..., Any] | Any | None = _UNSET,
    retry: Retry | None = None,
    timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    pivot: bool = False,
    compensable_after_pivot: str | None = None,
    to: str | None = None,
    on_failure: Literal["compensate", "pause", "fail"] = "compensate",
    result: type[BaseModel] | Any | None = _UNSET,
    compensation_retry: Retry | None = None,
    uses_db: bool = True,
) -> StepSpec | Callable[[Callable[..., Any]], StepSpec]:
    """Declare a step: ``@step`` or ``@step(retry=Retry(...), timeout=...)``.

    ``compensate`` is the undo function (or ``None`` to state there is
    none); ``pivot=True`` marks the point of no return (no compensable step
    may follow it unless ``compensable_after_pivot`` gives the reason).
    ``to`` sends the task to a participant topic instead of sagaline's
    workers.  ``on_failure`` says what a permanent failure does: compensate
    (default), pause for an operator, or fail the saga without compensating.
    ``result`` overrides the result model taken from the return annotation.
    ``uses_db=False`` tells the worker the step needs no database transaction.
    """

    def build(f: Callable[..., Any]) -> StepSpec:
        return StepSpec(
            f,
            name=name,
            compensate=compensate,
            retry=retry or Retry(),
            timeout=timeout,
            heartbeat_timeout=heartbeat_timeout,
            pivot=pivot,
            compensable_after_pivot=compensable_after_pivot,
            to=to,
            on_failure=on_failure,
            result=result,
            compensation_retry=compensation_retry,
            uses_db=uses_db,
        )

    return build(fn) if fn is not None else build


class SignalInfo(BaseModel):
    """An accepted signal, passed to ``on_signal`` hooks of waits without a payload model."""

    name: str
    by: str
    approved: bool | None = None
    note: str | None = None


class WaitSpec(Node):
    """A durable wait for a signal (``approval`` or ``wait_for_signal``)."""

    kind = "wait"

    def __init__(
        self,
        *,
        signal_kind: Literal["approval", "signal"],
        timeout: timedelta | None,
        on_approve: str | Node,
        on_reject: str | Node,
        on_timeout: str | Node,
        payload: type[BaseModel] | None,
        name: str | None,
    ) -> None:
        super().__init__(name)
        self.signal_kind = signal_kind
        self.timeout = timeout
        self.on_approve = _ref_name(on_approve)
        self.on_reject = _ref_name(on_reject)
        self.on_timeout = _ref_name(on_timeout)
        self.payload_type = payload
        self.when_fn: Callable[..., Any] | None = None
        self.on_signal_fn: Callable[..., Any] | None = None

    def __call__(self, fn: F) -> WaitSpec:
        """Decorate ``fn(self, data) -> bool``: wait only when it returns True."""
        self.when_fn = fn
        if not self.name:
            self.name = fn.__name__
        self.__doc__ = fn.__doc__
        return self

    def on_signal(self, fn: F) -> F:
        """Register ``fn(self, data, signal) -> data`` folding an accepted signal in.

        ``signal`` is the signal's payload model when the wait declares
        ``payload=``, else the :class:`SignalInfo` (by, approved, note).
        """
        self.on_signal_fn = fn
        return fn

    def references(self) -> list[str]:
        return [a for a in (self.on_approve, self.on_reject, self.on_timeout) if a not in _ACTIONS]


def approval(
    *,
    timeout: timedelta | None,
    on_approve: str | Node = "continue",
    on_reject: str | Node = "compensate",
    on_timeout: str | Node = "compensate",
    name: str | None = None,
) -> WaitSpec:
    """A wait for a person's approve/reject, with a timeout.

    Use as an attribute (``manager_ok = approval(timeout=timedelta(days=7))``)
    or decorate ``fn(self, data) -> bool`` to wait only when it returns True.
    Each outcome is ``"continue"``, ``"compensate"``, ``"fail"`` or a node name.
    """
    return WaitSpec(
        signal_kind="approval",
        timeout=timeout,
        on_approve=on_approve,
        on_reject=on_reject,
        on_timeout=on_timeout,
        payload=None,
        name=name,
    )


def wait_for_signal(
    *,
    timeout: timedelta | None,
    on_timeout: str | Node = "compensate",
    payload: type[BaseModel] | None = None,
    name: str | None = None,
) -> WaitSpec:
    """A wait for a named signal (optionally carrying a ``payload`` model)."""
    return WaitSpec(
        signal_kind="signal",
        timeout=timeout,
        on_approve="continue",
        on_reject="compensate",
        on_timeout=on_timeout,
        payload=payload,
        name=name,
    )


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


def sleep(duration: timedelta | Callable[..., timedelta], *, name: str | None = None) -> SleepSpec:
    """Sleep for ``duration`` (or ``duration(self, data)``) before the next node."""
    return SleepSpec(duration, name)


class ToolSpec(_FunctionNode):
    """A tool an agent may call: ``fn(self, ctx, args: ArgsModel) -> Result``."""

    kind = "tool"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None,
        description: str | None,
        risky: bool,
        retry: Retry,
        timeout: timedelta | None,
        heartbeat_timeout: timedelta | None,
    ) -> None:
        super().__init__(fn, name)
        self.description = description or inspect.getdoc(fn) or ""
        self.risky = risky
        self.retry = retry
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.args_type: type[BaseModel] = BaseModel
        self.result_type: type[BaseModel] | None = None
        self.compensate_fn: Callable[..., Any] | None = None

    @property
    def compensable(self) -> bool:
        return self.compensate_fn is not None

    def compensation(self, fn: F) -> F:
        """Register ``fn(self, ctx, args) -> None`` that undoes a call of this tool."""
        self.compensate_fn = fn
        return fn

    def info(self) -> ToolInfo:
        return ToolInfo(
            name=self.name,
            description=self.description,
            parameters=self.args_type.model_json_schema(),
            risky=self.risky,
        )


def tool(
    *,
    risky: bool = False,
    description: str | None = None,
    retry: Retry | None = None,
    timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    name: str | None = None,
) -> Callable[[Callable[..., Any]], ToolSpec]:
    """Declare a tool for agents; ``risky=True`` tools wait for an approval before running."""

    def build(fn: Callable[..., Any]) -> ToolSpec:
        return ToolSpec(
            fn,
            name=name,
            description=description,
            risky=risky,
            retry=retry or Retry(),
            timeout=timeout,
            heartbeat_timeout=heartbeat_timeout,
        )

    return build


class AgentSpec(Node):
    """An LLM loop: each turn's recorded :class:`AgentDecision` picks a tool or answers."""

    kind = "agent"

    def __init__(
        self,
        *,
        tools: list[ToolSpec],
        max_turns: int,
        retry: Retry,
        timeout: timedelta | None,
        approval_timeout: timedelta,
        name: str | None,
    ) -> None:
        super().__init__(name)
        self.tool_specs = list(tools)
        self.max_turns = max_turns
        self.retry = retry
        self.timeout = timeout
        self.approval_timeout = approval_timeout
        self.llm_fn: Callable[..., Any] | None = None
        self.on_answer_fn: Callable[..., Any] | None = None

    @property
    def tools(self) -> dict[str, ToolSpec]:
        """The agent's tools by name."""
        return {t.name: t for t in self.tool_specs}

    def llm(self, fn: F) -> F:
        """Register the LLM handler ``fn(self, ctx, turn: AgentTurn) -> AgentDecision``."""
        self.llm_fn = fn
        return fn

    def on_answer(self, fn: F) -> F:
        """Register ``fn(self, data, answer: str) -> data`` folding the final answer in."""
        self.on_answer_fn = fn
        return fn

    def turn_step(self, turn: int) -> str:
        """The task step name of LLM turn ``turn`` (``"investigate#3"``)."""
        return f"{self.name}#{turn}"

    def tool_step(self, tool_name: str, turn: int) -> str:
        """The task step name of the tool call decided in ``turn`` (``"investigate.search#3"``)."""
        return f"{self.name}.{tool_name}#{turn}"


def agent(
    *,
    tools: list[ToolSpec],
    max_turns: int = 8,
    retry: Retry | None = None,
    timeout: timedelta | None = None,
    approval_timeout: timedelta = timedelta(days=1),
    name: str | None = None,
) -> AgentSpec:
    """Declare an agent loop over ``tools``; register its LLM with ``@<agent>.llm``."""
    if max_turns < 1:
        raise SagaDefinitionError("agent max_turns must be at least 1")
    return AgentSpec(
        tools=list(tools),
        max_turns=max_turns,
        retry=retry or Retry(),
        timeout=timeout,
        approval_timeout=approval_timeout,
        name=name,
    )


class ParallelSpec(Node):
    """Steps that run at once; the saga continues when all have succeeded."""

    kind = "parallel"

    def __init__(self, branches: tuple[StepSpec, ...], name: str | None) -> None:
        super().__init__(name)
        self.branches = branches

    def references(self) -> list[str]:
        return [b.name for b in self.branches]


def parallel(*branches: StepSpec, name: str | None = None) -> ParallelSpec:
    """Run ``branches`` (steps declared earlier in the class) together, then join."""
    if len(branches) < 2:
        raise SagaDefinitionError("parallel() needs at least two steps")
    for b in branches:
        if not isinstance(b, StepSpec):
            raise SagaDefinitionError(f"parallel() takes steps, got {b!r}")
    return ParallelSpec(tuple(branches), name)


class ChildSpec(Node):
    """A child saga; its final data is this node's result."""

    kind = "child"

    def __init__(self, definition: type[Saga[Any]], timeout: timedelta | None, name: str | None):
        super().__init__(name)
        self.definition = definition
        self.timeout = timeout
        self.input_fn: Callable[..., Any] | None = None
        self.on_result_fn: Callable[..., Any] | None = None

    def input(self, fn: F) -> F:
        """Register ``fn(self, data) -> ChildData`` building the child's input."""
        self.input_fn = fn
        return fn

    def on_result(self, fn: F) -> F:
        """Register ``fn(self, data, child_data) -> data`` folding the child's outcome in."""
        self.on_result_fn = fn
        return fn


def child(
    definition: type[Saga[Any]], *, timeout: timedelta | None = None, name: str | None = None
) -> ChildSpec:
    """Run ``definition`` as a child saga at this point; its failure fails this node."""
    return ChildSpec(definition, timeout, name)


@dataclass(frozen=True)
class StepHandler:
    """What a worker needs to run one task: the bound function and its contract.

    ``fn(ctx, args)`` may be a plain or an ``async`` function.  ``args`` is
    an instance of ``args_type``: the saga data for steps and compensations,
    an :class:`AgentTurn` for agent turns, the tool's argument model for
    tool calls.  ``result_type`` is the model the worker encodes (``None``:
    nothing to record).
    """

    name: str
    kind: Literal["step", "compensate"]
    fn: Callable[..., Any]
    args_type: type[BaseModel]
    result_type: type[BaseModel] | None
    retry: Retry
    timeout: timedelta | None
    heartbeat_timeout: timedelta | None
    non_retryable: tuple[type[BaseException], ...]
    #: True: the worker runs the step in a Postgres transaction with the
    #: inbox and outbox rows; False: no database (reply through Kafka).
    uses_db: bool = True


def parse_task_step(step_name: str) -> tuple[str, str | None, int | None]:
    """Split a task step name into (node, tool, turn).

    ``"check"`` → ``("check", None, None)``; ``"investigate#3"`` →
    ``("investigate", None, 3)``; ``"investigate.search#3"`` →
    ``("investigate", "search", 3)``.
    """
    if "#" not in step_name:
        return step_name, None, None
    base, _, turn_text = step_name.rpartition("#")
    turn = int(turn_text) if turn_text.isdigit() else None
    if "." in base:
        node, _, tool_name = base.partition(".")
        return node, tool_name, turn
    return base, None, turn


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
        kind: Literal["step", "compensate"],
        step: str,
        *,
        instance: Saga[Any] | None = None,
    ) -> StepHandler:
        """The handler a worker runs for a task (see :func:`parse_task_step` for names)."""
        saga = instance if instance is not None else cls()
        node_name, tool_name, turn = parse_task_step(step)
        node = cls.nodes.get(node_name)
        if isinstance(node, AgentSpec) and turn is not None:
            if tool_name is None:
                if kind != "step" or node.llm_fn is None:
                    raise SagaDefinitionError(f"agent turn {step!r} has no {kind} handler")
                return StepHandler(
                    name=step,
                    kind="step",
                    fn=node.llm_fn.__get__(saga, cls),
                    args_type=AgentTurn,
                    result_type=AgentDecision,
                    retry=node.retry,
                    timeout=node.timeout,
                    heartbeat_timeout=None,
                    non_retryable=node.retry.non_retryable,
                )
            found = node.tools.get(tool_name)
            if found is None:
                raise SagaDefinitionError(f"agent {node_name!r} has no tool {tool_name!r}")
            return cls._tool_handler(found, kind, step, saga)
        if isinstance(node, StepSpec):
            if kind == "step":
                fn = node.fn
                retry = node.retry
                result_type = node.result_type
                timeout = node.timeout
                heartbeat = node.heartbeat_timeout
            else:
                if node.compensate_fn is None:
                    raise SagaDefinitionError(f"step {step!r} has no compensation")
                fn = node.compensate_fn
                retry = node.compensation_retry or cls.compensation_retry
                result_type = None
                timeout = node.timeout
                heartbeat = None
            return StepHandler(
                name=step,
                kind=kind,
                fn=fn.__get__(saga, cls),
                args_type=cls.data_type,
                result_type=result_type,
                retry=retry,
                timeout=timeout,
                heartbeat_timeout=heartbeat,
                non_retryable=retry.non_retryable,
                uses_db=node.uses_db,
            )
        raise SagaDefinitionError(f"{cls.type_name} has no {kind} handler for task {step!r}")

    @classmethod
    def _tool_handler(
        cls, spec: ToolSpec, kind: Literal["step", "compensate"], step: str, saga: Saga[Any]
    ) -> StepHandler:
        if kind == "step":
            fn, retry, result_type = spec.fn, spec.retry, spec.result_type
        else:
            if spec.compensate_fn is None:
                raise SagaDefinitionError(f"tool {spec.name!r} has no compensation")
            fn, retry, result_type = spec.compensate_fn, cls.compensation_retry, None
        return StepHandler(
            name=step,
            kind=kind,
            fn=fn.__get__(saga, cls),
            args_type=spec.args_type,
            result_type=result_type,
            retry=retry,
            timeout=spec.timeout,
            heartbeat_timeout=spec.heartbeat_timeout if kind == "step" else None,
            non_retryable=retry.non_retryable,
        )

    @classmethod
    def mermaid(cls) -> str:
        """A Mermaid flowchart of this definition."""
        from sagaline.orchestrator.core.diagram import to_mermaid

        text: str = to_mermaid(cls)
        return text


def resolve_hints(fn: Callable[..., Any], localns: dict[str, Any] | None = None) -> dict[str, Any]:
    """``typing.get_type_hints`` of ``fn`` as a definition error when it fails."""
    try:
        return typing.get_type_hints(fn, localns=localns)
    except Exception as exc:
        raise SagaDefinitionError(
            f"cannot resolve the annotations of {fn.__qualname__}: {exc}"
        ) from exc
