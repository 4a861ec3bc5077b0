"""Build and validate a saga definition when its class is created."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.nodes import DONE, Node, kind_of
from sagaline.orchestrator.core.saga import Saga

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
        if any(ch in n.name for ch in _RESERVED) or n.name == DONE.name:
            raise SagaDefinitionError(f"{cls.__qualname__}: node name {n.name!r} is reserved")
        if n.name in names:
            raise SagaDefinitionError(f"{cls.__qualname__}: duplicate node name {n.name!r}")
        names.add(n.name)
    return nodes


def _resolve_types(cls: type[Saga[Any]], nodes: list[Node], localns: dict[str, Any]) -> None:
    for n in nodes:
        kind_of(n).validate(cls, n, localns)


def _sequence(cls: type[Saga[Any]], nodes: list[Node]) -> list[Node]:
    claimed: dict[str, str] = {}
    for n in nodes:
        for name in kind_of(n).claim(cls, n, nodes):
            if name in claimed:
                raise SagaDefinitionError(
                    f"{cls.__qualname__}: step {name!r} is in two parallel groups"
                )
            claimed[name] = n.name
    return [n for n in nodes if kind_of(n).in_sequence and n.name not in claimed]


def _check_references(cls: type[Saga[Any]], sequence: list[Node]) -> None:
    where = cls.__qualname__
    in_sequence = {n.name for n in sequence}
    for n in cls.nodes.values():
        for ref in n.references():
            if ref not in in_sequence:
                raise SagaDefinitionError(
                    f"{where}.{n.name}: unknown step reference {ref!r} "
                    f"(known: {', '.join(sorted(in_sequence))})"
                )


def _check_pivot(cls: type[Saga[Any]], sequence: list[Node]) -> None:
    pivot: str | None = None
    for n in sequence:
        pivot = kind_of(n).check_pivot(cls, n, pivot)
