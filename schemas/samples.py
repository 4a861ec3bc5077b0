"""Deterministic sample records built from the models' field types.

Used to make the encoded fixtures of a release (``sagaline schemas
check-compat --release``) and by the tests: :func:`sample_records` returns a minimal
sample (only required fields) and maximal ones (every optional field set,
every branch of every union used at least once).
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime
from typing import Any, get_args

from sagaline.schemas._introspect import (
    is_enum_class,
    is_literal,
    is_record_class,
    mapping_value,
    sequence_item,
    union_members,
    unwrap,
)
from sagaline.schemas.base import Record
from sagaline.schemas.errors import SchemaGenerationError

__all__ = ["sample_records"]

_NONE = type(None)
_WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def sample_records(model: type[Record]) -> list[Record]:
    """A minimal sample of ``model`` and enough maximal ones to use every union branch."""
    width = max(1, _width(model, frozenset()))
    samples = [_record(model, minimal=True, k=0)]
    samples.extend(_record(model, minimal=False, k=k) for k in range(width))
    return samples


def _record(model: type[Record], *, minimal: bool, k: int) -> Record:
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if minimal and not info.is_required():
            continue
        values[name] = _value(info.annotation, name, minimal=minimal, k=k)
    return model.model_validate(values)


def _value(tp: Any, name: str, *, minimal: bool, k: int) -> Any:
    tp = unwrap(tp)
    members = union_members(tp)
    if members is not None:
        present = [m for m in members if m is not _NONE]
        if minimal and _NONE in members:
            return None
        return _value(present[k % len(present)], name, minimal=minimal, k=k)
    if tp is str:
        return f"{name}-{k}" if minimal else f"{name}-{k}-ünïcode-✓"
    if tp is bool:
        return k % 2 == 0
    if tp is int:
        return 7 + k if minimal else -(2**40) - k
    if tp is float:
        return 0.25 + k
    if tp is bytes:
        return b"" if minimal else bytes(range(k, k + 16))
    if tp is datetime:
        return _WHEN
    if tp is date:
        return _WHEN.date()
    if tp is uuid.UUID:
        return uuid.UUID(int=k + 1)
    if is_literal(tp):
        choices = get_args(tp)
        return choices[k % len(choices)]
    if is_enum_class(tp):
        members_list: list[enum.Enum] = list(tp)
        return members_list[k % len(members_list)]
    if is_record_class(tp):
        return _record(tp, minimal=minimal, k=k)
    item = sequence_item(tp)
    if item is not None:
        if minimal:
            return []
        branches = [m for m in (union_members(item) or ()) if m is not _NONE]
        if len(branches) > 1:  # a list of a union: one item of every branch
            return [_value(b, name, minimal=False, k=k) for b in branches]
        return [_value(item, name, minimal=False, k=k + i) for i in range(2)]
    inner = mapping_value(tp)
    if inner is not None:
        return {} if minimal else {f"key{k}": _value(inner, name, minimal=False, k=k)}
    raise SchemaGenerationError(f"no sample value for {tp!r} ({name})")


def _width(tp: Any, stack: frozenset[Any]) -> int:
    """The most branches of any union reachable from ``tp`` (lists of unions excepted)."""
    tp = unwrap(tp)
    if tp in stack:
        return 1
    if is_record_class(tp):
        inner_stack = stack | {tp}
        return max((_width(f.annotation, inner_stack) for f in tp.model_fields.values()), default=1)
    members = union_members(tp)
    if members is not None:
        present = [m for m in members if m is not _NONE]
        return max([len(present), *(_width(m, stack) for m in present)])
    if is_literal(tp):
        return len(get_args(tp))
    item = sequence_item(tp)
    if item is not None:
        branches = union_members(item)
        if branches is not None:
            return max([1, *(_width(b, stack) for b in branches if b is not _NONE)])
        return _width(item, stack)
    inner = mapping_value(tp)
    if inner is not None:
        return _width(inner, stack)
    return 1
