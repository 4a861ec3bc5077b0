"""Build and validate a saga definition when its class is created."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic import BaseModel

from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.saga import (
    DONE,
    AgentSpec,
    ChildSpec,
    Node,
    ParallelSpec,
    Saga,
    StepSpec,
    ToolSpec,
    WaitSpec,
    resolve_hints,
)

__all__ = ["build_definition"]

_RESERVED = ("#", ".", "/", ":")


def build_definition(cls: type[Saga[Any]], localns: dict[str, Any] | None = None) -> None:
    """Collect ``cls``'s nodes, resolve their types and check the rules; set class attributes."""
    where = cls.__qualname__
    type_name = getattr(cls, "type_name", None)
    if not isinstance(type_name, str) or not type_name:
        raise SagaDefinitionError(f'{where}: set `type_name = "..."` (a stable name)')
    if "type_name" not in cls.__dict__:
        raise SagaDefinitionError(f"{where}: a subclass needs its own `type_name`")
    if not isinstance(cls.version, int) or cls.version < 1:
        raise SagaDefinitionError(f"{where}: version must be a positive int")
    cls.data_type = _data_type(cls)
    nodes = _collect(cls)
    _resolve_types(cls, nodes, localns or {})
    sequence = _sequence(cls, nodes)
    cls.nodes = {n.name: n for n in nodes}
    cls.sequence = tuple(sequence)
    _check_references(cls, sequence)
    _check_pivot(cls, sequence)
    for n in nodes:
        if n.owner is None:
            n.owner = cls


def _data_type(cls: type[Saga[Any]]) -> type[BaseModel]:
    for base in getattr(cls, "__orig_bases__", ()):
        origin = typing.get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Saga):
            args = typing.get_args(base)
            if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
                return args[0]
            raise SagaDefinitionError(
                f"{cls.__qualname__}: the saga data type must be a pydantic model, got {args!r}"
            )
    inherited = getattr(cls, "data_type", None)
    if isinstance(inherited, type) and issubclass(inherited, BaseModel):
        return inherited
    raise SagaDefinitionError(f"{cls.__qualname__}: declare the data type: Saga[MyData]")


def _collect(cls: type[Saga[Any]]) -> list[Node]:
    """The nodes of ``cls``: inherited ones first (a node of the same name in the
    subclass replaces its parent's in place), then the class body's in order."""
    nodes: list[Node] = []
    for base in reversed(cls.__mro__[1:]):
        for inherited in getattr(base, "nodes", {}).values():
            if all(inherited is not n for n in nodes):
                nodes = [n for n in nodes if n.name != inherited.name] + [inherited]
    seen: dict[int, str] = {}
    for attr, value in cls.__dict__.items():
        if not isinstance(value, Node):
            continue
        if id(value) in seen:
            raise SagaDefinitionError(
                f"{cls.__qualname__}: node {value.name!r} is declared twice "
                f"(as {seen[id(value)]!r} and {attr!r})"
            )
        seen[id(value)] = attr
        # an inherited node (its owner is set) of the same name is overridden in place
        at = [i for i, n in enumerate(nodes) if n.name == value.name and n.owner is not None]
        if at:
            nodes[at[0]] = value
        else:
            nodes.append(value)
    names: set[str] = set()
    for n in nodes:
        if any(ch in n.name for ch in _RESERVED) or n.name == DONE:
            raise SagaDefinitionError(f"{cls.__qualname__}: node name {n.name!r} is reserved")
        if n.name in names:
            raise SagaDefinitionError(f"{cls.__qualname__}: duplicate node name {n.name!r}")
        names.add(n.name)
    return nodes


def _model_or_none(annotation: Any, what: str) -> type[BaseModel] | None:
    if annotation is None or annotation is type(None):
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _model_or_none(args[0], what)
    raise SagaDefinitionError(f"{what} must be a pydantic model or None, got {annotation!r}")


def _resolve_types(cls: type[Saga[Any]], nodes: list[Node], localns: dict[str, Any]) -> None:
    where = cls.__qualname__
    for n in nodes:
        if isinstance(n, StepSpec):
            if n.explicit_result_set:
                n.result_type = _model_or_none(n.explicit_result, f"{where}.{n.name} result")
            else:
                hints = resolve_hints(n.fn, localns)
                n.result_type = _model_or_none(hints.get("return"), f"{where}.{n.name} result")
            _check_arity(n.fn, 3, f"{where}.{n.name}")
            if n.compensate_fn is not None:
                _check_arity(n.compensate_fn, 3, f"{where}.{n.name} compensation")
        elif isinstance(n, ToolSpec):
            _check_arity(n.fn, 3, f"{where}.{n.name}")
            hints = resolve_hints(n.fn, localns)
            params = list(inspect.signature(n.fn).parameters)
            args_annotation = hints.get(params[2]) if len(params) >= 3 else None
            args_type = _model_or_none(args_annotation, f"{where}.{n.name} arguments")
            if args_type is None:
                raise SagaDefinitionError(f"{where}.{n.name}: annotate the tool's arguments model")
            n.args_type = args_type
            n.result_type = _model_or_none(hints.get("return"), f"{where}.{n.name} result")
        elif isinstance(n, AgentSpec):
            if n.llm_fn is None:
                raise SagaDefinitionError(f"{where}.{n.name}: register the LLM with @{n.name}.llm")
            for t in n.tool_specs:
                if not isinstance(t, ToolSpec):
                    raise SagaDefinitionError(f"{where}.{n.name}: {t!r} is not a @tool")
        elif isinstance(n, WaitSpec):
            if n.timeout is None:
                raise SagaDefinitionError(
                    f"{where}.{n.name}: a wait needs a timeout policy (timeout=..., on_timeout=...)"
                )
        elif (
            isinstance(n, ChildSpec)
            and n.input_fn is None
            and n.definition.data_type is not cls.data_type
        ):
            raise SagaDefinitionError(
                f"{where}.{n.name}: register the child's input with @{n.name}.input"
            )


def _check_arity(fn: Any, count: int, what: str) -> None:
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) != count:
        raise SagaDefinitionError(f"{what}: expected (self, ctx, args), got {len(params)} params")


def _sequence(cls: type[Saga[Any]], nodes: list[Node]) -> list[Node]:
    where = cls.__qualname__
    in_branch: dict[str, str] = {}
    tools_used: set[str] = set()
    for n in nodes:
        if isinstance(n, ParallelSpec):
            for b in n.branches:
                if b.name in in_branch:
                    raise SagaDefinitionError(f"{where}: step {b.name!r} is in two parallel groups")
                if b not in nodes:
                    raise SagaDefinitionError(f"{where}.{n.name}: branch {b!r} is not declared")
                if b.pivot or b.route_fn is not None:
                    raise SagaDefinitionError(
                        f"{where}.{n.name}: branch {b.name!r} cannot be a pivot or route"
                    )
                in_branch[b.name] = n.name
                b.in_parallel = n.name
        if isinstance(n, AgentSpec):
            for t in n.tool_specs:
                if t not in nodes:
                    raise SagaDefinitionError(f"{where}.{n.name}: tool {t!r} is not declared")
                tools_used.add(t.name)
    return [n for n in nodes if not isinstance(n, ToolSpec) and n.name not in in_branch]


def _check_references(cls: type[Saga[Any]], sequence: list[Node]) -> None:
    where = cls.__qualname__
    in_sequence = {n.name for n in sequence}
    for n in cls.nodes.values():
        for ref in n.references():
            if isinstance(n, ParallelSpec):
                continue
            if ref not in in_sequence:
                raise SagaDefinitionError(
                    f"{where}.{n.name}: unknown step reference {ref!r} "
                    f"(known: {', '.join(sorted(in_sequence))})"
                )


def _check_pivot(cls: type[Saga[Any]], sequence: list[Node]) -> None:
    where = cls.__qualname__
    pivot: str | None = None
    for n in sequence:
        if isinstance(n, StepSpec):
            if pivot is not None and n.compensable and not n.compensable_after_pivot:
                raise SagaDefinitionError(
                    f"{where}.{n.name}: compensable step after the pivot {pivot!r}; "
                    "pass compensable_after_pivot='<reason>' or drop the compensation"
                )
            if n.pivot:
                if pivot is not None:
                    raise SagaDefinitionError(f"{where}: two pivots ({pivot!r}, {n.name!r})")
                if n.compensable:
                    raise SagaDefinitionError(f"{where}.{n.name}: a pivot has no compensation")
                pivot = n.name
        if isinstance(n, ParallelSpec) and pivot is not None:
            for b in n.branches:
                if b.compensable and not b.compensable_after_pivot:
                    raise SagaDefinitionError(
                        f"{where}.{b.name}: compensable step after the pivot {pivot!r}"
                    )
