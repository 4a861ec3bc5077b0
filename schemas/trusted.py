"""Records built from values that are already valid, without validating them again.

pydantic's ``model_construct`` and ``model_copy(update=...)`` skip validation
but still walk every field in Python; these two do the same in a few slot
writes.  For sagaline's own hot paths only (issue 11): the values must be the
field values a validated record would hold (records from outside are always
validated: ``Codec.decode``).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, get_args

from pydantic import BaseModel

from sagaline.schemas.base import Record, _datetime_fields, utc_ms

__all__ = ["construct", "make", "replace"]

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
    _set(obj, "__pydantic_fields_set__", record.__pydantic_fields_set__.union(updates))
    _set(obj, "__pydantic_extra__", record.__pydantic_extra__)
    _set(obj, "__pydantic_private__", record.__pydantic_private__)
    return obj


class _Plan:
    """What ``make`` needs of a record class: its fields in order with their
    defaults, the required ones, and which may hold a datetime or a float."""

    __slots__ = ("count", "datetimes", "factories", "floats", "required", "template")

    def __init__(self, cls: type[BaseModel]) -> None:
        if not _plain(cls):
            raise TypeError(f"{cls.__name__} cannot be built without validation")
        self.template: dict[str, Any] = {}
        required: list[str] = []
        factories: list[tuple[str, Callable[[], Any]]] = []
        for name, info in cls.model_fields.items():
            self.template[name] = None
            if info.default_factory is not None:
                factories.append((name, info.default_factory))  # type: ignore[arg-type]
            elif info.is_required():
                required.append(name)
            elif _hashable(info.default):
                self.template[name] = info.default
            else:  # validation gives each instance a deep copy of an unhashable default
                factories.append((name, _copier(info.default)))
        self.required = tuple(required)
        self.factories = tuple(factories)
        self.count = len(self.template)
        self.datetimes = _datetime_fields(cls) if issubclass(cls, Record) else ()
        # validation makes an int given to a float field a float
        self.floats = tuple(
            name
            for name, info in cls.model_fields.items()
            if info.annotation is float or float in get_args(info.annotation)
        )


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _copier(default: Any) -> Callable[[], Any]:
    if type(default) in (list, dict, set) and not default:
        return type(default)  # a deep copy of an empty container is a new empty one
    return functools.partial(copy.deepcopy, default)


def _plain(cls: type[BaseModel]) -> bool:
    """Whether validating ``cls`` would do nothing beyond defaults and UTC datetimes."""
    if cls.__pydantic_post_init__ or cls.__private_attributes__:
        return False
    own = cls.__pydantic_decorators__
    validators = {**own.model_validators, **own.field_validators, **own.field_serializers}
    constrained = any(  # constraints (strict too), aliases: only validation applies them
        info.metadata or info.alias or info.validation_alias for info in cls.model_fields.values()
    )
    return not (set(validators) - {"_normalise_datetimes"}) and not (
        own.root_validators or constrained
    )


_PLANS: dict[type[BaseModel], _Plan] = {}


def make(cls: type[M], **values: Any) -> M:
    """``cls(**values)`` for values that are already valid, without validating them.

    Like the validating constructor: missing fields take their defaults
    (``default_factory`` called, a mutable default copied), datetimes become
    UTC with millisecond precision, the fields set are the ones given, and an
    unknown or missing required field is an error.  For sagaline's own
    records built from validated values only (issue 11); the values must
    already have their field's type (no coercion happens).
    """
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _Plan(cls)
    full = plan.template.copy()
    full.update(values)
    if len(full) != plan.count:
        raise TypeError(
            f"{cls.__name__}: unknown fields {sorted(set(values) - set(plan.template))}"
        )
    for name in plan.required:
        if name not in values:
            raise TypeError(
                f"{cls.__name__}: missing fields {sorted(set(plan.required) - set(values))}"
            )
    for name, factory in plan.factories:
        if name not in values:
            full[name] = factory()
    for name in plan.datetimes:
        value = full[name]
        if isinstance(value, datetime) and (value.tzinfo is not UTC or value.microsecond % 1000):
            full[name] = utc_ms(value)
    for name in plan.floats:
        if type(full[name]) is int:
            full[name] = float(full[name])
    obj = _new(cls)
    _set(obj, "__dict__", full)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj
