"""fastavro's input and output as records: the plans the codec uses when a record
type is not compiled (``avro_compiled``) and for bodies written with an older
schema (schema resolution).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sagaline.schemas._introspect import (
    is_enum_class,
    is_record_class,
    mapping_value,
    record_branches,
    sequence_item,
    union_members,
    unwrap,
)
from sagaline.schemas.avrogen import full_name
from sagaline.schemas.base import Record

__all__ = ["dumper", "loader"]

Converter = Callable[[Any], Any]


# Encoding plans: Record → the plain dicts fastavro writes.  Records inside a
# union travel in fastavro's tuple notation ``(full name, dict)`` so the branch
# is explicit (two records of the same shape stay distinct, and fastavro need
# not validate every branch to choose one).


@functools.cache
def dumper(model: type[Record]) -> Callable[[Record], dict[str, Any]]:
    converted = [
        (name, enc)
        for name, info in model.model_fields.items()
        if (enc := _encoder(info.annotation)) is not None
    ]

    def dump(record: Record) -> dict[str, Any]:
        # pydantic keeps field values in __dict__; copy, then convert the few
        # fields that hold records, unions or enums
        out = dict(record.__dict__)
        for name, enc in converted:
            value = out[name]
            if value is not None:
                out[name] = enc(value)
        return out

    return dump


def _encoder(tp: Any) -> Converter | None:
    """How to turn a field value into fastavro's input (None: as is)."""
    tp = unwrap(tp)
    members = union_members(tp)
    if members is not None:
        records = record_branches(tp)
        others = [m for m in members if m is not type(None) and not is_record_class(m)]
        other_encs = [e for e in (_encoder(m) for m in others) if e is not None]
        if not records and not other_encs:
            return None
        names = {r: full_name(r) for r in records}

        def union_value(value: Any) -> Any:
            cls: type[Record] = type(value)
            name = names.get(cls)
            if name is None:
                for branch, branch_name in names.items():
                    if isinstance(value, branch):
                        cls, name = branch, branch_name
                        break
            if name is not None:
                return (name, dumper(cls)(value))
            for enc in other_encs:
                value = enc(value)
            return value

        return union_value
    if is_record_class(tp):
        model: type[Record] = tp
        return lambda value: dumper(model)(value)
    if is_enum_class(tp):
        return lambda value: value.value
    item = sequence_item(tp)
    if item is not None:
        item_enc = _encoder(item)
        if item_enc is None:
            return None
        return lambda value: [None if v is None else item_enc(v) for v in value]
    inner = mapping_value(tp)
    if inner is not None:
        value_enc = _encoder(inner)
        if value_enc is None:
            return None
        return lambda value: {k: None if v is None else value_enc(v) for k, v in value.items()}
    return None


# Decoding plans: fastavro returns ``(full name, dict)`` for unions of two or
# more records; turn those into model instances so pydantic need not guess.


def loader(model: type[Record]) -> Converter | None:
    return _record_loader(model, frozenset())


def _record_loader(model: type[Record], stack: frozenset[type[Record]]) -> Converter | None:
    if model in stack:
        return None
    stack = stack | {model}
    fields = [
        (name, conv)
        for name, info in model.model_fields.items()
        if (conv := _decoder(info.annotation, stack)) is not None
    ]
    if not fields:
        return None

    def load(raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        for name, conv in fields:
            value = raw.get(name)
            if value is not None:
                raw[name] = conv(value)
        return raw

    return load


def _decoder(tp: Any, stack: frozenset[type[Record]]) -> Converter | None:
    tp = unwrap(tp)
    if union_members(tp) is not None:
        records = record_branches(tp)
        if len(records) > 1:
            by_name = {full_name(r): (r, _record_loader(r, stack)) for r in records}

            def union_value(value: Any) -> Any:
                if isinstance(value, tuple) and len(value) == 2:
                    model, load = by_name[value[0]]
                    body = value[1] if load is None else load(value[1])
                    return model.model_validate(body)
                return value

            return union_value
        if len(records) == 1:
            return _record_loader(records[0], stack)
        return None
    if is_record_class(tp):
        return _record_loader(tp, stack)
    item = sequence_item(tp)
    if item is not None:
        item_dec = _decoder(item, stack)
        if item_dec is None:
            return None
        return lambda value: [None if v is None else item_dec(v) for v in value]
    inner = mapping_value(tp)
    if inner is not None:
        value_dec = _decoder(inner, stack)
        if value_dec is None:
            return None
        return lambda value: {k: None if v is None else value_dec(v) for k, v in value.items()}
    return None
