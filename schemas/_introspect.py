"""Reading pydantic field annotations: the small type algebra shared by the
schema generator and the codec (which must agree on how a type maps)."""

from __future__ import annotations

import enum
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from sagaline.schemas.base import Record

__all__ = [
    "is_enum_class",
    "is_literal",
    "is_record_class",
    "mapping_value",
    "record_branches",
    "sequence_item",
    "union_members",
    "unwrap",
]

_UNION_ORIGINS: tuple[object, ...] = (Union, types.UnionType)


def unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` → ``X`` (repeatedly); other types unchanged."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def is_record_class(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Record)


def is_enum_class(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def is_literal(tp: Any) -> bool:
    return get_origin(tp) is Literal


def union_members(tp: Any) -> tuple[Any, ...] | None:
    """The members of a union type (``None`` is ``type(None)``), or None if not a union."""
    if get_origin(tp) in _UNION_ORIGINS:
        return tuple(unwrap(arg) for arg in get_args(tp))
    return None


def record_branches(tp: Any) -> tuple[type[Record], ...]:
    """The Record classes among a union's members."""
    members = union_members(tp) or ()
    return tuple(m for m in members if is_record_class(m))


def sequence_item(tp: Any) -> Any | None:
    """The item type of ``list[X]`` or ``tuple[X, ...]``; None for anything else."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is list and len(args) == 1:
        return unwrap(args[0])
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return unwrap(args[0])
    return None


def mapping_value(tp: Any) -> Any | None:
    """The value type of ``dict[str, X]``; None for anything else."""
    if get_origin(tp) is dict:
        args = get_args(tp)
        if len(args) == 2 and args[0] is str:
            return unwrap(args[1])
    return None
