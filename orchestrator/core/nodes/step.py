"""The step node: a Python function a worker runs, its compensation, result and route.

``@step`` turns ``fn(self, ctx, data: D) -> R`` (or ``async def``) into a ``StepSpec[D, R]``;
its hooks are typed against both: ``on_result(self, data: D, result: R) -> D``,
``compensation(self, ctx, data: D)``, ``route(self, data: D) -> Node | DONE | None``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, overload

from pydantic import BaseModel

from sagaline.orchestrator.core.errors import RoutingError, SagaDefinitionError
from sagaline.orchestrator.core.limit_spec import Limit
from sagaline.orchestrator.core.nodes.base import (
    DONE,
    UNSET,
    Done,
    FunctionNode,
    Node,
    NodeKind,
    StepHandler,
    TaskKind,
    check_arity,
    mermaid_label,
    ref_name,
    register,
    resolve_hints,
)
from sagaline.orchestrator.core.payloads import from_payload
from sagaline.orchestrator.core.policies import Retry
from sagaline.schemas.events import SagaPaused
from sagaline.schemas.trusted import make

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.orchestrator.core.saga import Saga
    from sagaline.schemas.base import Payload
    from sagaline.schemas.state import StepState

__all__ = [
    "StepKind",
    "StepSpec",
    "check_local",
    "failure_pause_reason",
    "model_or_none",
    "step",
]

DataT = TypeVar("DataT")
ResultT = TypeVar("ResultT")
D = TypeVar("D")
R = TypeVar("R")

#: A step function: ``fn(self, ctx, data) -> result``.
StepFn = Callable[[Any, Any, DataT], ResultT]
#: What a route hook returns: the next node, ``DONE``, or ``None`` (the next in order).
RouteTarget = Node | Done | None

OnFailure = Literal["compensate", "pause", "fail"]


def failure_pause_reason(step: str) -> str:
    """The pause reason of a step that failed permanently with ``on_failure="pause"``."""
    return f"step {step} failed permanently; retry or skip it"


class StepSpec(FunctionNode, Generic[DataT, ResultT]):
    """A step: ``fn(self, ctx, data: DataT) -> ResultT`` run by a worker."""

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
        on_failure: OnFailure,
        result: type[BaseModel] | Any | None,
        compensation_retry: Retry | None,
        uses_db: bool = True,
        limit: Limit[Any] | None = None,
        local: bool = False,
    ) -> None:
        super().__init__(fn, name)
        self.uses_db = uses_db
        self.local = local
        self.limit = limit
        self.compensate_declared = compensate is not UNSET
        self.compensate_fn: Callable[..., Any] | None = None if compensate is UNSET else compensate
        self.retry = retry
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.pivot = pivot
        self.compensable_after_pivot = compensable_after_pivot
        self.to = to
        self.on_failure = on_failure
        self.explicit_result_set = result is not UNSET
        self.explicit_result: type[BaseModel] | None = None if result is UNSET else result
        self.compensation_retry = compensation_retry
        self.result_type: type[BaseModel] | None = None
        self.on_result_fn: Callable[..., Any] | None = None
        self.route_fn: Callable[..., Any] | None = None
        self.route_targets: tuple[str, ...] = ()
        self.in_parallel: str | None = None

    @property
    def compensable(self) -> bool:
        return self.compensate_fn is not None

    def on_result(
        self, fn: Callable[[Any, DataT, ResultT], DataT]
    ) -> Callable[[Any, DataT, ResultT], DataT]:
        """Register ``fn(self, data, result) -> data``: fold the recorded result into the data."""
        self.on_result_fn = fn
        return fn

    def compensation(self, fn: Callable[[Any, Any, DataT], R]) -> Callable[[Any, Any, DataT], R]:
        """Register ``fn(self, ctx, data) -> None`` that undoes this step."""
        if self.compensate_declared and self.compensate_fn is None:
            raise SagaDefinitionError(f"step {self.name!r} declared compensate=None")
        self.compensate_fn = fn
        self.compensate_declared = True
        return fn

    def route(
        self, *targets: str | Node | Done
    ) -> Callable[[Callable[[Any, DataT], RouteTarget]], Callable[[Any, DataT], RouteTarget]]:
        """Register ``fn(self, data) -> node | DONE | None`` choosing the next node.

        ``targets`` lists every node the hook may return (checked when the
        class is created; a name is accepted here for a node declared later
        in the class body); ``None`` continues with the next node in order.
        """
        names = tuple(ref_name(t) for t in targets)

        def register_hook(
            fn: Callable[[Any, DataT], RouteTarget],
        ) -> Callable[[Any, DataT], RouteTarget]:
            self.route_fn = fn
            self.route_targets = names
            return fn

        return register_hook

    def references(self) -> list[str]:
        return [t for t in self.route_targets if t != DONE.name]


class _StepDecorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[[Any, Any, D], Coroutine[Any, Any, R]], /
    ) -> StepSpec[D, R]: ...

    @overload
    def __call__(self, fn: Callable[[Any, Any, D], R], /) -> StepSpec[D, R]: ...


@overload
def step(fn: Callable[[Any, Any, D], Coroutine[Any, Any, R]], /) -> StepSpec[D, R]: ...


@overload
def step(fn: Callable[[Any, Any, D], R], /) -> StepSpec[D, R]: ...


@overload
def step(
    *,
    name: str | None = None,
    compensate: Callable[..., Any] | None = UNSET,
    retry: Retry | None = None,
    timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    pivot: bool = False,
    compensable_after_pivot: str | None = None,
    to: str | None = None,
    on_failure: OnFailure = "compensate",
    result: type[BaseModel] | None = UNSET,
    compensation_retry: Retry | None = None,
    uses_db: bool = True,
    limit: Limit[Any] | None = None,
    local: bool = False,
) -> _StepDecorator: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    compensate: Callable[..., Any] | None = UNSET,
    retry: Retry | None = None,
    timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    pivot: bool = False,
    compensable_after_pivot: str | None = None,
    to: str | None = None,
    on_failure: OnFailure = "compensate",
    result: type[BaseModel] | None = UNSET,
    compensation_retry: Retry | None = None,
    uses_db: bool = True,
    limit: Limit[Any] | None = None,
    local: bool = False,
) -> StepSpec[Any, Any] | _StepDecorator:
    """Declare a step: ``@step`` or ``@step(retry=Retry(...), timeout=...)``.

    ``compensate`` is the undo function (or ``None`` to state there is
    none); ``pivot=True`` marks the point of no return (no compensable step
    may follow it unless ``compensable_after_pivot`` gives the reason).
    ``to`` sends the task to a participant topic instead of sagaline's
    workers.  ``on_failure`` says what a permanent failure does: compensate
    (default), pause for an operator, or fail the saga without compensating.
    ``result`` overrides the result model taken from the return annotation.
    ``uses_db=False`` tells the worker the step needs no database transaction.
    ``limit`` shares a key's slots with every saga (``Limit``: at most N running,
    at most N starts per period); the step waits for a slot in FIFO order.
    ``local=True`` runs the step inside the orchestrator process: its reply is
    journaled in the transaction of the decisions around it (with ``uses_db``
    exactly-once through the inbox; without, at-least-once).
    """

    def build(f: Callable[..., Any]) -> StepSpec[Any, Any]:
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
            limit=limit,
            local=local,
        )

    return build(fn) if fn is not None else build


def model_or_none(annotation: Any, what: str) -> type[BaseModel] | None:
    """The pydantic model an annotation names (``X | None`` is ``X``), or ``None``."""
    if annotation is None or annotation is type(None):
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return model_or_none(args[0], what)
    raise SagaDefinitionError(f"{what} must be a pydantic model or None, got {annotation!r}")


def check_local(node: StepSpec[Any, Any], where: str) -> None:
    """A local step runs in the orchestrator: refuse the settings only a worker honours."""
    worker_only = {"to": node.to, "heartbeat_timeout": node.heartbeat_timeout}
    for option, value in worker_only.items():
        if value is not None:
            raise SagaDefinitionError(
                f"{where}: local=True runs the step in the orchestrator, "
                f"but {option}= is a worker-only setting; drop one of them"
            )


class StepKind(NodeKind[StepSpec[Any, Any]]):
    kind = "step"
    skippable = True

    def validate(
        self, cls: type[Saga[Any]], node: StepSpec[Any, Any], localns: dict[str, Any]
    ) -> None:
        where = f"{cls.__qualname__}.{node.name}"
        if node.explicit_result_set:
            node.result_type = model_or_none(node.explicit_result, f"{where} result")
        else:
            hints = resolve_hints(node.fn, localns)
            node.result_type = model_or_none(hints.get("return"), f"{where} result")
        check_arity(node.fn, "self, ctx, args", where)
        if node.local:
            check_local(node, where)
        if node.compensate_fn is not None:
            check_arity(node.compensate_fn, "self, ctx, data", f"{where} compensation")
        if node.on_result_fn is not None:
            check_arity(node.on_result_fn, "self, data, result", f"{where} on_result hook")
        if node.route_fn is not None:
            check_arity(node.route_fn, "self, data", f"{where} route hook")

    def check_pivot(
        self, cls: type[Saga[Any]], node: StepSpec[Any, Any], pivot: str | None
    ) -> str | None:
        where = cls.__qualname__
        if pivot is not None and node.compensable and not node.compensable_after_pivot:
            raise SagaDefinitionError(
                f"{where}.{node.name}: compensable step after the pivot {pivot!r}; "
                "pass compensable_after_pivot='<reason>' or drop the compensation"
            )
        if node.pivot:
            if pivot is not None:
                raise SagaDefinitionError(f"{where}: two pivots ({pivot!r}, {node.name!r})")
            if node.compensable:
                raise SagaDefinitionError(f"{where}.{node.name}: a pivot has no compensation")
            return node.name
        return pivot

    # -- the decider ----------------------------------------------------------

    def dispatch(self, ctx: DecisionContext, node: StepSpec[Any, Any], st: StepState) -> None:
        ctx.dispatch_task(
            st,
            args=ctx.s.data,
            destination=node.to or "tasks",
            compensable=node.compensable,
            timeout=node.timeout,
            heartbeat=node.heartbeat_timeout,
        )

    def drive(self, ctx: DecisionContext, node: StepSpec[Any, Any]) -> bool:
        st = ctx.s.steps[node.name]
        if st.status in ("pending", "ready"):
            self.dispatch(ctx, node, st)
            return False
        if st.status in ("succeeded", "skipped"):
            ctx.route_after(node)
            return True
        return False

    def next_node(self, ctx: DecisionContext, node: StepSpec[Any, Any]) -> tuple[Node | None, str]:
        if node.route_fn is None:
            return super().next_node(ctx, node)
        chosen = node.route_fn(ctx.saga, ctx.data())
        if chosen is None:
            return super().next_node(ctx, node)
        if not isinstance(chosen, Node | Done):
            raise RoutingError(
                f"{ctx.defn.type_name}.{node.name}: route returned {chosen!r}; "
                "return a node (type(self).<node>), DONE or None"
            )
        name = chosen.name
        if name not in node.route_targets:
            raise RoutingError(
                f"{ctx.defn.type_name}.{node.name}: route returned {name!r}, "
                f"declared {node.route_targets!r}"
            )
        target = None if name == DONE.name else ctx.defn.node(name)
        return target, f"route:{name}"

    def fold_result(
        self, ctx: DecisionContext, node: StepSpec[Any, Any], result: Payload | None
    ) -> BaseModel:
        data = ctx.data()
        if node.on_result_fn is None or result is None:
            return data
        value = from_payload(result, node.result_type) if node.result_type else None
        out: BaseModel = node.on_result_fn(ctx.saga, data, value)
        return out

    def on_permanent_failure(
        self, ctx: DecisionContext, node: StepSpec[Any, Any], step: str, error: str
    ) -> None:
        if node.on_failure == "pause":
            ctx.emit(make(SagaPaused, at=ctx.now, by="sagaline", reason=failure_pause_reason(step)))
        elif node.on_failure == "fail":
            ctx.finish("failed", f"step {step} failed: {error}")
        else:
            ctx.start_compensation(f"step {step} failed: {error}")

    def retry_policy(self, node: StepSpec[Any, Any], step: str) -> Retry:
        return node.retry

    def compensation_retry(self, node: StepSpec[Any, Any]) -> Retry | None:
        return node.compensation_retry

    def compensation_timeout(self, node: StepSpec[Any, Any]) -> timedelta | None:
        return node.timeout

    # -- workers --------------------------------------------------------------

    def handler(
        self,
        cls: type[Saga[Any]],
        saga: Saga[Any],
        node: StepSpec[Any, Any],
        kind: TaskKind,
        step: str,
    ) -> StepHandler:
        if kind == "step":
            fn, retry, result_type = node.fn, node.retry, node.result_type
            heartbeat = node.heartbeat_timeout
        else:
            if node.compensate_fn is None:
                raise SagaDefinitionError(f"step {step!r} has no compensation")
            fn = node.compensate_fn
            retry = node.compensation_retry or cls.compensation_retry
            result_type, heartbeat = None, None
        return StepHandler(
            name=step,
            kind=kind,
            fn=fn.__get__(saga, cls),
            args_type=cls.data_type,
            result_type=result_type,
            retry=retry,
            timeout=node.timeout,
            heartbeat_timeout=heartbeat,
            non_retryable=retry.non_retryable,
            uses_db=node.uses_db,
        )

    # -- the diagram ----------------------------------------------------------

    def mermaid_nodes(self, node: StepSpec[Any, Any]) -> list[str]:
        n = node.name
        marks = []
        if node.compensate_fn is not None:
            marks.append(f"undo: {node.compensate_fn.__name__}")
        if node.pivot:
            marks.append("pivot")
        if node.to:
            marks.append(f"to {node.to}")
        if node.local:
            marks.append("local")
        extra = f"<br/><small>{', '.join(marks)}</small>" if marks else ""
        return [f'{n}["{mermaid_label(n)}{extra}"]']

    def mermaid_edges(
        self, node: StepSpec[Any, Any], following: str, target: Callable[[str], str]
    ) -> list[str]:
        lines = [f"{node.name} --> {following}"]
        lines.extend(f"{node.name} -. route .-> {target(t)}" for t in node.route_targets)
        return lines


register(StepKind())
