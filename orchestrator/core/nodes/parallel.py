"""The parallel node: steps that run at once, joined before the next node."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.nodes.base import Node, NodeKind, mermaid_label, register
from sagaline.orchestrator.core.nodes.step import StepKind, StepSpec

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.orchestrator.core.saga import Saga

__all__ = ["ParallelKind", "ParallelSpec", "parallel"]


class ParallelSpec(Node):
    """Steps that run at once; the saga continues when all have succeeded."""

    kind = "parallel"

    def __init__(self, branches: tuple[StepSpec[Any, Any], ...], name: str | None) -> None:
        super().__init__(name)
        self.branches = branches


def parallel(*branches: StepSpec[Any, Any], name: str | None = None) -> ParallelSpec:
    """Run ``branches`` (steps declared earlier in the class) together, then join."""
    if len(branches) < 2:
        raise SagaDefinitionError("parallel() needs at least two steps")
    for b in branches:
        if not isinstance(b, StepSpec):
            raise SagaDefinitionError(f"parallel() takes steps, got {b!r}")
    return ParallelSpec(tuple(branches), name)


_STEP = StepKind()


class ParallelKind(NodeKind[ParallelSpec]):
    kind = "parallel"

    def claim(self, cls: type[Saga[Any]], node: ParallelSpec, nodes: list[Node]) -> list[str]:
        where = cls.__qualname__
        for b in node.branches:
            if b not in nodes:
                raise SagaDefinitionError(f"{where}.{node.name}: branch {b!r} is not declared")
            if b.pivot or b.route_fn is not None:
                raise SagaDefinitionError(
                    f"{where}.{node.name}: branch {b.name!r} cannot be a pivot or route"
                )
            b.in_parallel = node.name
        return [b.name for b in node.branches]

    def check_pivot(
        self, cls: type[Saga[Any]], node: ParallelSpec, pivot: str | None
    ) -> str | None:
        if pivot is not None:
            for b in node.branches:
                if b.compensable and not b.compensable_after_pivot:
                    raise SagaDefinitionError(
                        f"{cls.__qualname__}.{b.name}: compensable step after the pivot {pivot!r}"
                    )
        return pivot

    def branches(self, node: ParallelSpec) -> list[str]:
        return [b.name for b in node.branches]

    def drive(self, ctx: DecisionContext, node: ParallelSpec) -> bool:
        s = ctx.s
        for b in node.branches:
            st = s.steps[b.name]
            if st.status in ("pending", "ready"):
                _STEP.dispatch(ctx, b, st)
        if all(s.steps[b.name].status in ("succeeded", "skipped") for b in node.branches):
            ctx.route_after(node)
            return True
        return False

    def mermaid_nodes(self, node: ParallelSpec) -> list[str]:
        lines = [f'subgraph {node.name}["parallel: {mermaid_label(node.name)}"]']
        for b in node.branches:
            lines.extend(f"    {line}" for line in _STEP.mermaid_nodes(b))
        lines.append("end")
        return lines

    def mermaid_edges(
        self, node: ParallelSpec, following: str, target: Callable[[str], str]
    ) -> list[str]:
        return [f"{node.name} --> {following}"]


register(ParallelKind())
