"""What every node kind shares: the :class:`Node` base, ``DONE``, and the kind registry.

A node kind is a :class:`Node` subclass (its spec, what a saga class body
declares) plus a :class:`NodeKind` handler registered under the spec's
``kind``: how the kind is validated when the class is created, how it
drives, how it handles its replies, timeouts and failures, what handler a
worker runs for its tasks, and its Mermaid fragment.  The decider, the
validation and the diagram look a node's handler up with :func:`kind_of`;
they never test a node's class.  Adding a node kind is one module that
defines both and calls :func:`register` (imported by ``nodes/__init__``),
plus its name in the journal's ``NodeEntered.kind`` vocabulary
(``schemas/events.py``, a wire-schema change) if the saga can stop at it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Literal, TypeVar, final

from pydantic import BaseModel

from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.payloads import PayloadDecodeError, to_payload
from sagaline.orchestrator.core.policies import NO_RETRY, Retry
from sagaline.schemas.events import StepCompleted
from sagaline.schemas.trusted import make

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.orchestrator.core.saga import Saga
    from sagaline.schemas.base import Payload
    from sagaline.schemas.commands import SignalSaga
    from sagaline.schemas.replies import StepSucceeded
    from sagaline.schemas.state import StepState, Timer, WaitState

__all__ = [
    "ACTIONS",
    "DONE",
    "UNSET",
    "Done",
    "FunctionNode",
    "Node",
    "NodeKind",
    "OutcomeAction",
    "StepHandler",
    "TaskKind",
    "check_arity",
    "kind_of",
    "mermaid_label",
    "parse_task_step",
    "ref_name",
    "register",
    "registered_kinds",
    "resolve_hints",
]

F = TypeVar("F", bound=Callable[..., Any])
N = TypeVar("N", bound="Node")

TaskKind = Literal["step", "compensate"]

#: What a wait does on approve / reject / timeout: continue with the next
#: node, compensate, fail (needs a person), or go to the named node.
OutcomeAction = str

ACTIONS = frozenset({"continue", "compensate", "fail"})


@final
class Done:
    """The type of :data:`DONE`: a ``route`` hook's "the saga is done"."""

    name: Final = "__done__"

    def __repr__(self) -> str:
        return "DONE"

    def __reduce__(self) -> str:
        return "DONE"


#: Returned by a ``route`` hook: the saga is done (skip the remaining nodes).
DONE: Final = Done()


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


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


def ref_name(target: str | Node | Done) -> str:
    """The node name a reference stands for (``DONE`` is ``"__done__"``)."""
    if isinstance(target, str):
        return target
    return target.name


class FunctionNode(Node):
    """A node backed by a method; calling the attribute on an instance calls the method."""

    def __init__(self, fn: Callable[..., Any], name: str | None) -> None:
        super().__init__(name)
        self.name = name or fn.__name__
        self.fn = fn
        self.__doc__ = fn.__doc__

    @typing.overload
    def __get__(self: N, instance: None, owner: type[Any] | None = None) -> N: ...

    @typing.overload
    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any: ...

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Any:
        if instance is None:
            return self
        return self.fn.__get__(instance, owner)


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
    kind: TaskKind
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


def resolve_hints(fn: Callable[..., Any], localns: dict[str, Any] | None = None) -> dict[str, Any]:
    """``typing.get_type_hints`` of ``fn`` as a definition error when it fails."""
    try:
        return typing.get_type_hints(fn, localns=localns)
    except Exception as exc:
        raise SagaDefinitionError(
            f"cannot resolve the annotations of {fn.__qualname__}: {exc}"
        ) from exc


def check_arity(fn: Any, expected: str, what: str) -> None:
    """Raise a definition error naming ``what`` unless ``fn`` takes ``expected`` positionally.

    ``expected`` is the parameter list as the user writes it (``"self, data,
    result"``); its length is the number of positional parameters wanted.
    """
    count = len(expected.split(","))
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = signature.parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params) and len(positional) <= count:
        return
    required = [p for p in positional if p.default is p.empty]
    if len(required) <= count <= len(positional):
        return
    raise SagaDefinitionError(f"{what}: expected ({expected}), got {len(positional)} params")


def mermaid_label(text: str) -> str:
    return text.replace('"', "'")


class NodeKind(Generic[N]):
    """How one kind of node behaves; the defaults suit a node with no tasks.

    Every method takes the node (the spec) it is asked about; the decision
    methods take the :class:`~sagaline.orchestrator.core.decision.DecisionContext`
    of the input being decided, through which they emit events and send records.
    """

    #: The ``Node.kind`` this handler serves.
    kind: ClassVar[str] = "node"
    #: False: the node is not a stop of the saga's sequence (a tool).
    in_sequence: ClassVar[bool] = True
    #: True: an operator may skip the node's task (``SkipStep``).
    skippable: ClassVar[bool] = False

    # -- class creation -------------------------------------------------------

    def validate(self, cls: type[Saga[Any]], node: N, localns: dict[str, Any]) -> None:
        """Resolve the node's types and check its rules (hooks, arity, policies)."""

    def claim(self, cls: type[Saga[Any]], node: N, nodes: list[Node]) -> list[str]:
        """Names of other nodes this one takes out of the sequence (parallel branches)."""
        return []

    def check_pivot(self, cls: type[Saga[Any]], node: N, pivot: str | None) -> str | None:
        """Check the pivot rule at this node; return the pivot seen so far."""
        return pivot

    # -- the decider ----------------------------------------------------------

    def branches(self, node: N) -> list[str]:
        """Names of the steps entering ``node`` starts at once."""
        return []

    def drive(self, ctx: DecisionContext, node: N) -> bool:
        """Make ``node`` progress; True when the saga moved to another node."""
        raise NotImplementedError(f"cannot run node {node!r}")

    def next_node(self, ctx: DecisionContext, node: N) -> tuple[Node | None, str]:
        """Where the saga goes when ``node`` is done, and why (``via``)."""
        return ctx.defn.next_node(node.name), "sequence"

    def on_succeeded(
        self, ctx: DecisionContext, node: N, reply: StepSucceeded, st: StepState
    ) -> None:
        """Record an accepted success reply: fold its result into the data."""
        try:
            new_data = self.fold_result(ctx, node, reply.result)
        except PayloadDecodeError as exc:
            ctx.emit_failure(reply.step, reply.attempt, False, "InvalidResult", str(exc))
            return
        ctx.emit(
            make(
                StepCompleted,
                at=ctx.now,
                step=reply.step,
                attempt=reply.attempt,
                result=reply.result,
                data=to_payload(new_data),
            )
        )

    def fold_result(self, ctx: DecisionContext, node: N, result: Payload | None) -> BaseModel:
        """The saga data after folding a task's (or a skip's) ``result`` in."""
        return ctx.data()

    def on_permanent_failure(self, ctx: DecisionContext, node: N, step: str, error: str) -> None:
        """A task of the node failed for good (and the saga is not compensating)."""
        ctx.start_compensation(f"step {step} failed: {error}")

    def on_timed_out(self, ctx: DecisionContext, node: N, st: StepState, timer: Timer) -> None:
        """A task of the node timed out (before the failure is recorded)."""

    def on_compensation_started(
        self, ctx: DecisionContext, node: N, st: StepState, reason: str
    ) -> None:
        """The saga started compensating while ``st`` (a task of the node) is in flight."""

    def on_signal(self, ctx: DecisionContext, node: N, wait: WaitState, sig: SignalSaga) -> None:
        """Accept signal ``sig`` for the node's open ``wait``."""
        raise NotImplementedError(f"{node!r} has no waits")

    def on_wait_timeout(self, ctx: DecisionContext, node: N, name: str) -> None:
        """The node's wait ``name`` timed out (``WaitTimedOut`` is recorded already)."""
        raise NotImplementedError(f"{node!r} has no waits")

    def on_timer(self, ctx: DecisionContext, node: N, timer: Timer) -> None:
        """A timer of the node's own (a sleep's end) fired."""
        ctx.ignore("not_applicable", f"timer kind {timer.kind}")

    def retry_policy(self, node: N, step: str) -> Retry:
        """The retry policy of the node's task ``step``."""
        return NO_RETRY

    def compensation_retry(self, node: N) -> Retry | None:
        """The node's own compensation retry policy (``None``: the saga's)."""
        return None

    def compensation_timeout(self, node: N) -> timedelta | None:
        return None

    # -- workers --------------------------------------------------------------

    def handler(
        self, cls: type[Saga[Any]], saga: Saga[Any], node: N, kind: TaskKind, step: str
    ) -> StepHandler:
        """What a worker runs for the node's task ``step``."""
        raise SagaDefinitionError(f"{cls.type_name} has no {kind} handler for task {step!r}")

    # -- the diagram ----------------------------------------------------------

    def mermaid_nodes(self, node: N) -> list[str]:
        """The node's Mermaid declaration lines (without indentation)."""
        return [f'{node.name}["{mermaid_label(node.name)}"]']

    def mermaid_edges(self, node: N, following: str, target: Callable[[str], str]) -> list[str]:
        """Edges out of ``node`` to ``following`` (the next node); ``target`` maps actions."""
        return [f"{node.name} --> {following}"]

    def may_compensate(self, node: N) -> bool:
        """Whether the diagram shows the node can lead to compensation."""
        return True


_KINDS: dict[str, NodeKind[Any]] = {}


def register(handler: NodeKind[Any]) -> NodeKind[Any]:
    """Register the handler of a node kind (one per ``Node.kind``)."""
    if handler.kind in _KINDS:
        raise SagaDefinitionError(f"node kind {handler.kind!r} is registered twice")
    _KINDS[handler.kind] = handler
    return handler


def registered_kinds() -> dict[str, NodeKind[Any]]:
    """Every registered node kind by name."""
    return dict(_KINDS)


def kind_of(node: Node) -> NodeKind[Any]:
    """The registered handler of ``node``'s kind."""
    try:
        return _KINDS[node.kind]
    except KeyError:
        raise SagaDefinitionError(f"no node kind {node.kind!r} is registered") from None
