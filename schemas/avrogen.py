"""Generate Avro schemas from the pydantic :class:`~sagaline.schemas.base.Record` models.

The models are the source; the ``.avsc`` files in ``schemas/avro`` are
generated from them, committed, and read by programs in other languages.

Mapping (namespace ``dev.sagaline``):

=============================  ==============================================
Python                         Avro
=============================  ==============================================
``str`` / ``int`` / ``float``  ``string`` / ``long`` / ``double``
``bool`` / ``bytes``           ``boolean`` / ``bytes``
``datetime``                   ``long`` with ``logicalType: timestamp-millis``
``date`` / ``UUID``            ``int`` ``date`` / ``string`` ``uuid``
``Literal["a", "b"]``          enum ``<Record><Field>`` with ``default`` = first
``enum.Enum`` (str values)     enum named after the class, ``default`` = first
``list[X]``, ``tuple[X, ...]`` array
``dict[str, X]``               map
``X | None``                   ``["null", X]``, default ``null``
``A | B`` (records)            union of the records
nested ``Record``              record, defined once and referenced after
=============================  ==============================================

Field defaults are carried (a union puts the default's branch first, as
Avro requires).  Arrays of items that can encode to zero bytes are refused:
a corrupted count could otherwise make a reader loop without consuming input.

``sagaline schemas generate`` rewrites ``schemas/avro/*.avsc``;
``--check`` exits 1 when a committed file is stale or missing.
"""

from __future__ import annotations

import copy
import enum
import functools
import inspect
import json
import re
import sys
import uuid
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any, get_args

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sagaline.schemas._introspect import (
    is_enum_class,
    is_literal,
    is_record_class,
    mapping_value,
    sequence_item,
    union_members,
    unwrap,
)
from sagaline.schemas.base import SCHEMA_NAMESPACE, Record
from sagaline.schemas.errors import SchemaGenerationError

__all__ = [
    "AVRO_DIR",
    "avro_schema",
    "check_bounded",
    "full_name",
    "generate",
    "record_name",
    "schema_text",
    "stale_files",
    "write_files",
]

AVRO_DIR = Path(__file__).resolve().parent / "avro"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
_DATE = {"type": "int", "logicalType": "date"}
_UUID = {"type": "string", "logicalType": "uuid"}
_EPOCH_DATE = date(1970, 1, 1)
_NONE = type(None)


def record_name(model: type[Record]) -> str:
    """The Avro name (without namespace) of a record model."""
    name = model.avro_name or model.__name__
    if not _NAME.match(name):
        raise SchemaGenerationError(f"{model.__qualname__}: {name!r} is not a valid Avro name")
    return name


def full_name(model: type[Record]) -> str:
    """The namespaced Avro name of a record model, e.g. ``dev.sagaline.StartSaga``."""
    return f"{SCHEMA_NAMESPACE}.{record_name(model)}"


def avro_schema(model: type[Record]) -> dict[str, Any]:
    """The self-contained Avro schema of ``model`` (a fresh copy the caller may keep)."""
    return copy.deepcopy(_cached_schema(model))


def schema_text(model: type[Record]) -> str:
    """The committed ``.avsc`` text of ``model`` (stable JSON, two-space indent)."""
    return json.dumps(_cached_schema(model), indent=2, ensure_ascii=False) + "\n"


@functools.cache
def _cached_schema(model: type[Record]) -> dict[str, Any]:
    if not is_record_class(model):
        raise SchemaGenerationError(f"{model!r} is not a sagaline.schemas.base.Record subclass")
    schema = _Generator().record(model)
    assert isinstance(schema, dict)  # a fresh generator defines the record in full
    check_bounded(schema)
    return schema


class _Generator:
    """One schema: remembers the named types already defined in it."""

    def __init__(self) -> None:
        self.defined: dict[str, object] = {}

    def record(self, model: type[Record]) -> dict[str, Any] | str:
        name = full_name(model)
        known = self.defined.get(name)
        if known is not None:
            if known is not model:
                raise SchemaGenerationError(
                    f"two different classes are named {name}: {known!r} and {model!r}"
                )
            return name
        self.defined[name] = model
        fields = [self.field(model, fname, info) for fname, info in model.model_fields.items()]
        schema: dict[str, Any] = {"type": "record", "name": name}
        doc = model.avro_doc or _own_doc(model)
        if doc:
            schema["doc"] = doc
        schema["fields"] = fields
        return schema

    def field(self, model: type[Record], fname: str, info: FieldInfo) -> dict[str, Any]:
        where = f"{model.__qualname__}.{fname}"
        if not _NAME.match(fname):
            raise SchemaGenerationError(f"{where}: {fname!r} is not a valid Avro field name")
        tp = unwrap(info.annotation)
        default = _python_default(info)
        enum_name = record_name(model) + "".join(p.capitalize() for p in fname.split("_"))
        avro_type = self.type(tp, where, enum_name, default)
        out: dict[str, Any] = {"name": fname, "type": avro_type}
        if info.description:
            out["doc"] = info.description
        if default is not PydanticUndefined:
            out["default"] = _avro_default(tp, default, where)
        elif union_members(tp) is not None and _NONE in (union_members(tp) or ()):
            out["default"] = None  # nullable without default: old writers may omit it
        return out

    def type(self, tp: Any, where: str, enum_name: str, default: Any = PydanticUndefined) -> Any:
        tp = unwrap(tp)
        members = union_members(tp)
        if members is not None:
            return self.union(members, where, enum_name, default)
        return self.single(tp, where, enum_name)

    def union(self, members: tuple[Any, ...], where: str, enum_name: str, default: Any) -> Any:
        first = _default_branch(members, default)
        ordered = [first, *(m for m in members if m is not first)] if first else list(members)
        if _NONE in ordered and first is None:
            ordered = [_NONE, *(m for m in ordered if m is not _NONE)]
        branches = ["null" if m is _NONE else self.single(m, where, enum_name) for m in ordered]
        seen: set[str] = set()
        for branch in branches:
            key = _branch_key(branch)
            if key in seen:
                raise SchemaGenerationError(f"{where}: two union branches map to Avro {key}")
            seen.add(key)
        return branches

    def single(self, tp: Any, where: str, enum_name: str) -> Any:
        simple = _SIMPLE.get(tp)
        if simple is not None:
            return copy.deepcopy(simple)
        if is_record_class(tp):
            return self.record(tp)
        if is_literal(tp):
            return self.enum(enum_name, [*get_args(tp)], where)
        if is_enum_class(tp):
            return self.enum(tp.__name__, [m.value for m in tp], where, owner=tp)
        item = sequence_item(tp)
        if item is not None:
            return {"type": "array", "items": self.type(item, where, enum_name)}
        value = mapping_value(tp)
        if value is not None:
            return {"type": "map", "values": self.type(value, where, enum_name)}
        raise SchemaGenerationError(f"{where}: type {tp!r} has no Avro mapping")

    def enum(
        self, name: str, symbols: list[Any], where: str, owner: object = None
    ) -> dict[str, Any] | str:
        for symbol in symbols:
            if not isinstance(symbol, str) or not _NAME.match(symbol):
                raise SchemaGenerationError(
                    f"{where}: enum symbol {symbol!r} must be a string matching "
                    f"[A-Za-z_][A-Za-z0-9_]* (use a plain str field otherwise)"
                )
        full = f"{SCHEMA_NAMESPACE}.{name}"
        known = self.defined.get(full)
        key = owner if owner is not None else tuple(symbols)
        if known is not None:
            if known != key:
                raise SchemaGenerationError(f"{where}: enum name {full} is already used")
            return full
        self.defined[full] = key
        return {"type": "enum", "name": full, "symbols": symbols, "default": symbols[0]}


_SIMPLE: dict[Any, Any] = {
    str: "string",
    int: "long",
    float: "double",
    bool: "boolean",
    bytes: "bytes",
    datetime: _TIMESTAMP,
    date: _DATE,
    uuid.UUID: _UUID,
}


def _own_doc(model: type[Record]) -> str | None:
    doc = model.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else None


def _python_default(info: FieldInfo) -> Any:
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        # Only empty containers are stable enough to become schema defaults.
        if isinstance(value, (list, dict, tuple)) and not value:
            return value
    return PydanticUndefined


def _default_branch(members: tuple[Any, ...], default: Any) -> Any:
    """The union member the default belongs to (Avro wants it first), or None."""
    if default is PydanticUndefined or default is None:
        return None
    for member in members:
        if member is _NONE:
            continue
        if is_record_class(member) and isinstance(default, member):
            return member
        if member in _SIMPLE and type(default) is member:
            return member
        if is_literal(member) and default in get_args(member):
            return member
        if is_enum_class(member) and isinstance(default, member):
            return member
        if sequence_item(member) is not None and isinstance(default, (list, tuple)):
            return member
        if mapping_value(member) is not None and isinstance(default, dict):
            return member
    raise SchemaGenerationError(f"default {default!r} matches no member of {members!r}")


def _branch_key(branch: Any) -> str:
    if isinstance(branch, str):
        return branch
    kind = branch["type"]
    if kind in ("record", "enum", "fixed"):
        return str(branch["name"])
    if isinstance(kind, str) and "logicalType" in branch:
        return kind  # a logical type shares its underlying Avro type's branch
    return str(kind)


def _avro_default(tp: Any, value: Any, where: str) -> Any:
    """A Python default as the JSON value Avro expects in a schema."""
    tp = unwrap(tp)
    members = union_members(tp)
    if members is not None:
        if value is None:
            return None
        return _avro_default(_default_branch(members, value), value, where)
    if value is None:
        raise SchemaGenerationError(f"{where}: default None for a non-nullable type")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Record):
        return {
            name: _avro_default(info.annotation, getattr(value, name), where)
            for name, info in type(value).model_fields.items()
        }
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, date):
        return (value - _EPOCH_DATE).days
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        item = sequence_item(tp)
        return [_avro_default(item, v, where) for v in value]
    if isinstance(value, dict):
        inner = mapping_value(tp)
        return {k: _avro_default(inner, v, where) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)):
        return value
    raise SchemaGenerationError(f"{where}: default {value!r} cannot be written in a schema")


def check_bounded(schema: Any) -> None:
    """Refuse arrays whose items may encode to zero bytes (see the module doc)."""
    named: dict[str, Any] = {}

    def min_size(s: Any, stack: frozenset[str]) -> int:
        if isinstance(s, str):
            if s == "null":
                return 0
            if s in ("boolean", "int", "long", "bytes", "string"):
                return 1
            if s == "float":
                return 4
            if s == "double":
                return 8
            if s in stack:
                return 1  # recursion: at least the bytes that got us here
            target = named.get(s)
            return min_size(target, stack | {s}) if target is not None else 1
        if isinstance(s, list):
            for branch in s:
                min_size(branch, stack)
            return 1
        kind = s.get("type")
        if kind == "record":
            named[s["name"]] = s
            return sum(min_size(f["type"], stack | {s["name"]}) for f in s.get("fields", []))
        if kind == "enum":
            named[s["name"]] = s
            return 1
        if kind == "fixed":
            named[s["name"]] = s
            return int(s.get("size", 0))
        if kind == "array":
            if min_size(s["items"], stack) == 0:
                raise SchemaGenerationError(
                    f"array of {s['items']!r}: items that encode to zero bytes are refused"
                )
            return 1
        if kind == "map":
            min_size(s["values"], stack)
            return 1
        return min_size(kind, stack)

    min_size(schema, frozenset())


def write_files(records: Iterable[type[Record]], directory: Path = AVRO_DIR) -> list[Path]:
    """Write ``<RecordName>.avsc`` for each record; returns the files that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    for model in records:
        path = directory / f"{record_name(model)}.avsc"
        text = schema_text(model)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def stale_files(records: Iterable[type[Record]], directory: Path = AVRO_DIR) -> list[str]:
    """Descriptions of ``.avsc`` files that are missing, stale or left over."""
    problems: list[str] = []
    expected: set[str] = set()
    for model in records:
        path = directory / f"{record_name(model)}.avsc"
        expected.add(path.name)
        if not path.is_file():
            problems.append(f"{path.name}: missing")
        elif path.read_text(encoding="utf-8") != schema_text(model):
            problems.append(f"{path.name}: stale (run sagaline schemas generate)")
    if directory.is_dir():
        for path in sorted(directory.glob("*.avsc")):
            if path.name not in expected:
                problems.append(f"{path.name}: no record in sagaline.schemas.catalog.ALL_RECORDS")
    return problems


def generate(directory: Path = AVRO_DIR, *, check: bool = False) -> int:
    """``sagaline schemas generate [--check] [--dir DIR]``: rewrite the ``.avsc`` files
    (or, with ``check``, report stale ones); returns the exit code."""
    from sagaline.schemas.catalog import ALL_RECORDS

    if not check:
        for path in write_files(ALL_RECORDS, directory):
            print(f"wrote {path}")
        leftovers = [p for p in stale_files(ALL_RECORDS, directory) if "no record" in p]
        for problem in leftovers:
            print(f"warning: {problem}", file=sys.stderr)
        return 0
    problems = stale_files(ALL_RECORDS, directory)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{len(ALL_RECORDS)} schemas up to date in {directory}")
    return 1 if problems else 0
