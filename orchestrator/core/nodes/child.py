"""The child node: a child saga whose outcome is the node's result."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.nodes.base import (
    Node,
    NodeKind,
    check_arity,
    mermaid_label,
    register,
)
from sagaline.orchestrator.core.payloads import (
    from_payload,
    input_sha256,
    to_payload,
)
from sagaline.schemas.commands import CancelSaga, ParentRef, StartSaga
from sagaline.schemas.events import ChildSagaRequested, StepDispatched
from sagaline.schemas.trusted import make

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.orchestrator.core.saga import Saga
    from sagaline.schemas.base import Payload
    from sagaline.schemas.state import StepState, Timer

__all__ = ["ChildKind", "ChildSpec", "child"]

ChildDataT = TypeVar("ChildDataT", bound=BaseModel)
D = TypeVar("D")


class ChildSpec(Node, Generic[ChildDataT]):
    """A child saga; its final data is this node's result."""

    kind = "child"

    def __init__(
        self, definition: type[Saga[ChildDataT]], timeout: timedelta | None, name: str | None
    ) -> None:
        super().__init__(name)
        self.definition = definition
        self.timeout = timeout
        self.input_fn: Callable[..., Any] | None = None
        self.on_result_fn: Callable[..., Any] | None = None

    def input(self, fn: Callable[[Any, Any], ChildDataT]) -> Callable[[Any, Any], ChildDataT]:
        """Register ``fn(self, data) -> ChildData`` building the child's input."""
        self.input_fn = fn
        return fn

    def on_result(self, fn: Callable[[Any, D, ChildDataT], D]) -> Callable[[Any, D, ChildDataT], D]:
        """Register ``fn(self, data, child_data) -> data`` folding the child's outcome in."""
        self.on_result_fn = fn
        return fn


def child(
    definition: type[Saga[ChildDataT]],
    *,
    timeout: timedelta | None = None,
    name: str | None = None,
) -> ChildSpec[ChildDataT]:
    """Run ``definition`` as a child saga at this point; its failure fails this node."""
    return ChildSpec(definition, timeout, name)


class ChildKind(NodeKind[ChildSpec[Any]]):
    kind = "child"
    skippable = True

    def validate(self, cls: type[Saga[Any]], node: ChildSpec[Any], localns: dict[str, Any]) -> None:
        where = f"{cls.__qualname__}.{node.name}"
        if node.input_fn is None and node.definition.data_type is not cls.data_type:
            raise SagaDefinitionError(
                f"{where}: register the child's input with @{node.name}.input"
            )
        if node.input_fn is not None:
            check_arity(node.input_fn, "self, data", f"{where} input hook")
        if node.on_result_fn is not None:
            check_arity(node.on_result_fn, "self, data, child_data", f"{where} on_result hook")

    def drive(self, ctx: DecisionContext, node: ChildSpec[Any]) -> bool:
        st = ctx.s.steps[node.name]
        if st.status in ("pending", "ready"):
            self.dispatch(ctx, node, st)
            return False
        if st.status in ("succeeded", "skipped"):
            ctx.route_after(node)
            return True
        return False

    def dispatch(self, ctx: DecisionContext, node: ChildSpec[Any], st: StepState) -> None:
        run = max(st.run, 1)
        child_id = f"{ctx.s.saga_id}/{node.name}/{run}"
        data = ctx.data()
        child_data = node.input_fn(ctx.saga, data) if node.input_fn is not None else data
        payload = to_payload(child_data)
        deadline = ctx.now + node.timeout if node.timeout is not None else None
        definition = node.definition
        ctx.emit(
            make(
                ChildSagaRequested,
                at=ctx.now,
                step=node.name,
                child_saga_id=child_id,
                child_type=definition.type_name,
                child_version=definition.version,
            )
        )
        ctx.emit(
            make(
                StepDispatched,
                at=ctx.now,
                step=node.name,
                attempt=st.attempt + 1,
                run=run,
                idempotency_key=child_id,
                task_id=child_id,
                destination="commands",
                deadline_at=deadline,
            )
        )
        ctx.send(
            "commands",
            StartSaga(
                envelope=ctx.envelope(child_id, definition.type_name, definition.version),
                data=payload,
                input_sha256=input_sha256(payload),
                requested_by=f"saga:{ctx.s.saga_id}",
                parent=ParentRef(
                    saga_id=ctx.s.saga_id,
                    saga_type=ctx.s.saga_type,
                    saga_version=ctx.s.saga_version,
                    step=node.name,
                ),
            ),
        )

    def fold_result(
        self, ctx: DecisionContext, node: ChildSpec[Any], result: Payload | None
    ) -> BaseModel:
        data = ctx.data()
        if node.on_result_fn is None or result is None:
            return data
        child_data = from_payload(result, node.definition.data_type)
        folded: BaseModel = node.on_result_fn(ctx.saga, data, child_data)
        return folded

    def _cancel(
        self, ctx: DecisionContext, node: ChildSpec[Any], st: StepState, reason: str
    ) -> None:
        ctx.send(
            "commands",
            CancelSaga(
                envelope=ctx.envelope(
                    st.task_id, node.definition.type_name, node.definition.version
                ),
                by=f"saga:{ctx.s.saga_id}",
                reason=reason,
            ),
        )

    def on_timed_out(
        self, ctx: DecisionContext, node: ChildSpec[Any], st: StepState, timer: Timer
    ) -> None:
        self._cancel(ctx, node, st, "child saga timed out")

    def on_compensation_started(
        self, ctx: DecisionContext, node: ChildSpec[Any], st: StepState, reason: str
    ) -> None:
        if st.status == "running" and st.task_id:
            self._cancel(ctx, node, st, reason)

    def mermaid_nodes(self, node: ChildSpec[Any]) -> list[str]:
        return [f'{node.name}[/"child saga: {mermaid_label(node.definition.type_name)}"/]']


register(ChildKind())
