"""Records built from values that are already valid, without validating them again.

pydantic's ``model_construct`` and ``model_copy(update=...)`` skip validation
but still walk every field in Python; these two do the same in a few slot
writes.  For sagaline's own hot paths only (issue 11): the values must be the
field values a validated record would hold (records from outside are always
validated: ``Codec.decode``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["construct", "replace"]

M = TypeVar("M", bound=BaseModel)

_new = object.__new__
_set = object.__setattr__


def construct(cls: type[M], values: dict[str, Any]) -> M:
    """An instance of ``cls`` holding ``values`` (every field, in field order; kept as is)."""
    obj = _new(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def replace(record: M, updates: Mapping[str, Any]) -> M:
    """``record.model_copy(update=updates)``: a shallow copy with ``updates`` applied."""
    obj = _new(type(record))
    values = record.__dict__.copy()
    values.update(updates)
    _set(obj, "__dict__", values)
    fields_set = set(record.__pydantic_fields_set__)
    fields_set.update(updates)
    _set(obj, "__pydantic_fields_set__", fields_set)
    _set(obj, "__pydantic_extra__", record.__pydantic_extra__)
    _set(obj, "__pydantic_private__", record.__pydantic_private__)
    return obj
