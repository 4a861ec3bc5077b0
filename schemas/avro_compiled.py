"""Avro binary encoders and decoders compiled from the current schemas (issue 11).

fastavro interprets a schema on every call (about 0.7 µs a value here, and it
validates every branch of every nullable union to choose one).  For the
current schema of each catalogued record, this module writes Python source for
one function per record type and ``exec``s it once:

* **encode**: record instance → Avro body, read straight from the instance's
  fields (no intermediate dict); union branches chosen by ``is None`` and by
  record class.  The bytes are fastavro's (Avro binary is canonical for a
  schema; ``tests/unit/test_schemas_compiled.py`` compares both on every sample
  record).
* **decode** in two forms: *dicts* exactly as fastavro's ``schemaless_reader``
  returns them with ``return_record_name_override`` (then validated by
  pydantic, for records from outside), and *trusted*: model instances built
  without validation (``model_construct`` semantics), for sagaline's own
  hash-chained journal entries and signed state snapshots, whose values were
  validated when they were written.  Avro's types are the records' types
  (``str``, ``int``, tz-aware UTC datetimes of millisecond precision, enum
  symbols = the ``Literal`` values), so nothing validation would change is
  skipped; a model with an ``Enum`` class or its own validators is not
  compiled for trusted decoding.

A schema shape this compiler does not know (``float``, ``fixed``, unions of
several non-record types...) raises :class:`Unsupported`; the codec then keeps
fastavro for that record.  Older writer schemas (schema resolution) always go
through fastavro.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
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
from sagaline.schemas.base import SCHEMA_NAMESPACE, Record
from sagaline.schemas.trusted import construct

__all__ = ["Compiled", "Short", "Unsupported", "compile_record"]

Encoder = Callable[[Record, bytearray], None]
Decoder = Callable[[bytes, int], tuple[Any, int]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TABLE_SIZE = 8192


class Unsupported(Exception):
    """The schema has a shape this compiler does not handle (fastavro is used)."""


class Short(Exception):
    """The body ends before the record does."""


class Bad(Exception):
    """The body is not valid Avro for the schema (bad union index, enum index...)."""


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_TAB = [_zigzag(i) for i in range(_TABLE_SIZE)]


#: recently written large values (timestamps repeat in every snapshot of a saga)
_RECENT: dict[int, bytes] = {}


def _long(n: int) -> bytes:
    if 0 <= n < _TABLE_SIZE:
        return _TAB[n]
    encoded = _RECENT.get(n)
    if encoded is None:
        if not -(1 << 63) <= n < (1 << 63):
            raise ValueError(f"{n} does not fit an Avro long")
        encoded = _zigzag(n)
        if len(_RECENT) >= 4096:
            _RECENT.clear()
        _RECENT[n] = encoded
    return encoded


def _varint(buf: bytes, pos: int, b: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``b`` had its high bit set."""
    n = b & 0x7F
    shift = 7
    while True:
        b = buf[pos]
        pos += 1
        if shift == 63 and b & 0x7E:  # a tenth byte holds bit 63 only
            raise Bad("a varint beyond 64 bits")
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise Bad("a varint longer than 10 bytes")


def _millis(value: Any) -> int:
    """A datetime as Avro timestamp-millis, the way fastavro computes it."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a naive datetime for a timestamp-millis field")
        delta = value - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000
    return int(value)


_RECENT_TIMES: dict[Any, bytes] = {}


def _timestamp(value: Any) -> bytes:
    """The encoded timestamp-millis of a datetime (recent ones remembered)."""
    encoded = _RECENT_TIMES.get(value)
    if encoded is None:
        encoded = _long(_millis(value))
        if len(_RECENT_TIMES) >= 4096:
            _RECENT_TIMES.clear()
        _RECENT_TIMES[value] = encoded
    return encoded


def _branch(cache: dict[type, int], names: Mapping[str, int], value: Any) -> int:
    """The union branch of a record value whose class is not cached yet."""
    for cls in type(value).__mro__:
        if is_record_class(cls):
            index = names.get(full_name(cls))
            if index is not None:
                cache[type(value)] = index
                return index
    raise ValueError(f"{type(value).__name__} is not a branch of this union")


class _Lazy:
    """One generated function: its source is written at once (an unsupported schema
    shows there), compiled on its first use (``compile`` is most of the cost)."""

    def __init__(self, gen: _Gen) -> None:
        self._gen: _Gen | None = gen
        gen.generate()
        self._fn: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        fn = self._fn
        if fn is None:
            gen = self._gen
            if gen is None:  # another thread loaded it between the two reads
                fn = self._fn
                assert fn is not None
            else:
                fn = self._fn = gen.load()
                self._gen = None
        return fn(*args)


class Compiled:
    """The compiled functions of one record type's current schema."""

    def __init__(self, encode: Encoder, decode_dict: Decoder, trusted: Decoder | None) -> None:
        self.encode = encode
        self.decode_dict = decode_dict
        self.decode_trusted = trusted


def compile_record(schema: Mapping[str, Any], model: type[Record]) -> Compiled:
    """Compile ``schema`` (the current Avro schema of ``model``, as JSON); raise Unsupported."""
    classes = _record_classes(model)
    encode = _Lazy(_Gen(schema, classes, "enc"))
    decode_dict = _Lazy(_Gen(schema, classes, "dict"))
    try:
        trusted: Decoder | None = _Lazy(_Gen(schema, classes, "model"))
    except Unsupported:
        trusted = None
    return Compiled(encode, decode_dict, trusted)


def _record_classes(model: type[Record]) -> dict[str, type[Record]]:
    """Every record class reachable from ``model``'s fields, by Avro full name."""
    found: dict[str, type[Record]] = {}

    def visit(tp: Any) -> None:
        tp = unwrap(tp)
        members = union_members(tp)
        if members is not None:
            for member in members:
                visit(member)
            for branch in record_branches(tp):
                visit(branch)
            return
        if is_record_class(tp):
            name = full_name(tp)
            if name not in found:
                found[name] = tp
                for info in tp.model_fields.values():
                    visit(info.annotation)
            return
        for inner in (sequence_item(tp), mapping_value(tp)):
            if inner is not None:
                visit(inner)

    visit(model)
    return found


def _trusted_ok(cls: type[Record]) -> bool:
    """Whether instances of ``cls`` may be built without validation."""
    if cls.__pydantic_post_init__ or cls.__private_attributes__:
        return False
    own = cls.__pydantic_decorators__
    allowed = {"_normalise_datetimes", "_typed_input"}
    validators = {**own.model_validators, **own.field_validators}
    if set(validators) - allowed or _constrained(cls):
        return False
    return not any(_has_enum_class(info.annotation) for info in cls.model_fields.values())


def _constrained(cls: type[Record]) -> bool:
    """Whether a field of ``cls`` has constraints (strictness too) or an alias that only
    validation applies (none has today; one added later must not be skipped)."""
    return any(
        info.metadata or info.alias or info.validation_alias for info in cls.model_fields.values()
    )


def _has_enum_class(tp: Any) -> bool:
    tp = unwrap(tp)
    members = union_members(tp)
    if members is not None:
        return any(_has_enum_class(m) for m in members if not is_record_class(m))
    if is_enum_class(tp):
        return True
    inner = sequence_item(tp) or mapping_value(tp)
    return inner is not None and not is_record_class(inner) and _has_enum_class(inner)


class _Gen:
    """Writes the Python source of one record's encoder or decoder (``mode``:
    ``enc``, ``dict`` or ``model``) and executes it."""

    def __init__(self, schema: Mapping[str, Any], classes: dict[str, type[Record]], mode: str):
        self.schema, self.classes, self.mode = schema, classes, mode
        self.named: dict[str, Mapping[str, Any]] = {}
        self.functions: dict[str, str] = {}  # record full name -> function name
        self.lines: list[str] = []
        self.tail: list[str] = []  # statements that need every function defined
        self.ns: dict[str, Any] = {
            "_TAB": _TAB,
            "_long": _long,
            "_timestamp": _timestamp,
            "_varint": _varint,
            "_branch": _branch,
            "_mk": construct,
            "_EPOCH": _EPOCH,
            "_td": timedelta,
            "_Short": Short,
            "_Bad": Bad,
            "_pack_d": struct.Struct("<d").pack,
            "_unpack_d": struct.Struct("<d").unpack_from,
        }
        self.counter = 0
        self.top = ""

    def generate(self) -> None:
        """Write the source (raises :class:`Unsupported`)."""
        self.top = self._record_function(self.schema)

    def load(self) -> Callable[..., Any]:
        """Compile and execute the source; the top record's function."""
        source = "\n".join(self.lines + self.tail)
        # the source is generated here from a catalogued schema, never from input
        exec(compile(source, f"<avro {self.mode} {self.top}>", "exec"), self.ns)  # noqa: S102
        fn: Callable[..., Any] = self.ns[self.top]
        return fn

    def _const(self, value: Any) -> str:
        self.counter += 1
        name = f"_k{self.counter}"
        self.ns[name] = value
        return name

    def _var(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _resolve(self, t: Any) -> Any:
        if isinstance(t, dict) and t.get("type") == "enum":
            self.named.setdefault(self._record_name(t), t)
        if isinstance(t, str) and t in self.named:
            return self.named[t]
        if isinstance(t, str) and "." not in t and f"{SCHEMA_NAMESPACE}.{t}" in self.named:
            return self.named[f"{SCHEMA_NAMESPACE}.{t}"]
        return t

    def _record_name(self, schema: Mapping[str, Any]) -> str:
        name = str(schema["name"])
        if "." not in name:
            name = f"{schema.get('namespace') or SCHEMA_NAMESPACE}.{name}"
        return name

    def _record_function(self, schema: Mapping[str, Any]) -> str:
        name = self._record_name(schema)
        if name in self.functions:
            return self.functions[name]
        self.named[name] = schema
        fn = f"_rec{len(self.functions)}"
        self.functions[name] = fn
        if self.mode == "enc":
            body = self._encode_record(schema)
            self.lines += [f"def {fn}(o, out):", "    d = o.__dict__", *body, ""]
        else:
            body = self._decode_record(schema, name)
            self.lines += [f"def {fn}(buf, pos):", "    L = len(buf)", *body, ""]
        return fn

    # -- encoding -----------------------------------------------------------

    def _encode_record(self, schema: Mapping[str, Any]) -> list[str]:
        lines: list[str] = []
        for field_ in schema["fields"]:
            var = self._var("v")
            lines.append(f"    {var} = d[{field_['name']!r}]")
            lines += self._enc(field_["type"], var, "    ")
        return lines or ["    pass"]

    def _enc(self, t: Any, x: str, ind: str) -> list[str]:
        t = self._resolve(t)
        if isinstance(t, list):
            return self._enc_union(t, x, ind)
        kind = t if isinstance(t, str) else t["type"]
        logical = t.get("logicalType") if isinstance(t, dict) else None
        if kind == "long" and logical == "timestamp-millis":
            return [f"{ind}out += _timestamp({x})"]
        if kind in ("long", "int"):
            return [f"{ind}out += _TAB[{x}] if 0 <= {x} < {_TABLE_SIZE} else _long({x})"]
        if kind == "null":
            return []
        if kind == "boolean":
            return [f"{ind}out += b'\\x01' if {x} else b'\\x00'"]
        if kind == "double":
            return [f"{ind}out += _pack_d({x})"]
        if kind in ("string", "bytes"):
            b = self._var("b")
            value = f"{x}.encode()" if kind == "string" else x
            return [f"{ind}{b} = {value}", f"{ind}out += _long(len({b}))", f"{ind}out += {b}"]
        if kind == "enum":
            table = self._const({s: _long(i) for i, s in enumerate(t["symbols"])})
            e = self._var("e")
            return [
                f"{ind}{e} = {table}.get({x})",
                f"{ind}if {e} is None:",
                f"{ind}    {e} = {table}[{x}.value]",
                f"{ind}out += {e}",
            ]
        if kind == "record":
            return [f"{ind}{self._record_function(t)}({x}, out)"]
        if kind in ("array", "map"):
            return self._enc_collection(t, x, ind)
        raise Unsupported(f"Avro type {kind!r}")

    def _enc_collection(self, t: Mapping[str, Any], x: str, ind: str) -> list[str]:
        y = self._var("y")
        lines = [f"{ind}if {x}:", f"{ind}    out += _long(len({x}))"]
        if t["type"] == "array":
            lines.append(f"{ind}    for {y} in {x}:")
            inner = t["items"]
        else:
            k = self._var("k")
            lines += [
                f"{ind}    for {k}, {y} in {x}.items():",
                f"{ind}        {k} = {k}.encode()",
                f"{ind}        out += _long(len({k}))",
                f"{ind}        out += {k}",
            ]
            inner = t["values"]
        body = self._enc(inner, y, ind + "        ")
        return [*lines, *(body or [f"{ind}        pass"]), f"{ind}out += b'\\x00'"]

    def _enc_union(self, branches: list[Any], x: str, ind: str) -> list[str]:
        null = branches.index("null") if "null" in branches else None
        others = [(i, self._resolve(b)) for i, b in enumerate(branches) if b != "null"]
        lines = []
        if null is not None:
            lines += [f"{ind}if {x} is None:", f"{ind}    out += {_long(null)!r}", f"{ind}else:"]
            ind += "    "
        if len(others) == 1:
            index, branch = others[0]
            return [*lines, f"{ind}out += {_long(index)!r}", *self._enc(branch, x, ind)]
        if any(not isinstance(b, dict) or b.get("type") != "record" for _, b in others):
            raise Unsupported("a union of several non-record types")
        names = {self._record_name(b): i for i, b in others}
        cache = {self.classes[n]: i for n, i in names.items() if n in self.classes}
        writers = [
            None if b == "null" else self._record_function(self._resolve(b)) for b in branches
        ]
        c, n = self._const(cache), self._const(names)
        w = self._const([None] * len(branches))
        self.tail.append(f"{w}[:] = [{', '.join(str(f) for f in writers)}]")
        i = self._var("i")
        return [
            *lines,
            f"{ind}{i} = {c}.get({x}.__class__)",
            f"{ind}if {i} is None:",
            f"{ind}    {i} = _branch({c}, {n}, {x})",
            f"{ind}out += _TAB[{i}]",
            f"{ind}{w}[{i}]({x}, out)",
        ]

    # -- decoding -----------------------------------------------------------

    def _decode_record(self, schema: Mapping[str, Any], name: str) -> list[str]:
        lines: list[str] = []
        values: list[tuple[str, str]] = []
        for field_ in schema["fields"]:
            var = self._var("v")
            lines += self._dec(field_["type"], var, "    ")
            values.append((field_["name"], var))
        if self.mode == "model":
            cls = self.classes.get(name)
            if cls is None or not _trusted_ok(cls):
                raise Unsupported(f"{name} cannot be built without validation")
            by_name = dict(values)
            if set(by_name) != set(cls.model_fields):
                raise Unsupported(f"{name}: the schema's fields are not the model's")
            ordered = ", ".join(f"{f!r}: {by_name[f]}" for f in cls.model_fields)
            return [*lines, f"    return _mk({self._const(cls)}, {{{ordered}}}), pos"]
        literal = ", ".join(f"{f!r}: {v}" for f, v in values)
        return [*lines, f"    return {{{literal}}}, pos"]

    def _read_long(self, x: str, ind: str) -> list[str]:
        return [
            f"{ind}{x} = buf[pos]",
            f"{ind}pos += 1",
            f"{ind}if {x} & 128:",
            f"{ind}    {x}, pos = _varint(buf, pos, {x})",
            f"{ind}{x} = ({x} >> 1) ^ -({x} & 1)",
        ]

    def _dec(self, t: Any, x: str, ind: str) -> list[str]:
        t = self._resolve(t)
        if isinstance(t, list):
            return self._dec_union(t, x, ind)
        kind = t if isinstance(t, str) else t["type"]
        logical = t.get("logicalType") if isinstance(t, dict) else None
        if kind in ("long", "int"):
            lines = self._read_long(x, ind)
            if logical == "timestamp-millis":
                lines.append(f"{ind}{x} = _EPOCH + _td(0, 0, 0, {x})")
            return lines
        if kind == "null":
            return [f"{ind}{x} = None"]
        if kind == "boolean":
            return [
                f"{ind}{x} = buf[pos]",
                f"{ind}pos += 1",
                f"{ind}if {x} > 1:",
                f"{ind}    raise _Bad('a boolean byte other than 0 or 1')",
                f"{ind}{x} = {x} == 1",
            ]
        if kind == "double":
            return [f"{ind}{x} = _unpack_d(buf, pos)[0]", f"{ind}pos += 8"]
        if kind in ("string", "bytes"):
            e = self._var("e")
            value = f"buf[pos:{e}].decode()" if kind == "string" else f"buf[pos:{e}]"
            return [
                *self._read_long(x, ind),
                f"{ind}{e} = pos + {x}",
                f"{ind}if {x} < 0 or {e} > L:",
                f"{ind}    raise _Short()",
                f"{ind}{x} = {value}",
                f"{ind}pos = {e}",
            ]
        if kind == "enum":
            symbols = self._const(tuple(t["symbols"]))
            return [
                *self._read_long(x, ind),
                f"{ind}if not 0 <= {x} < {len(t['symbols'])}:",
                f"{ind}    raise _Bad('enum index out of range')",
                f"{ind}{x} = {symbols}[{x}]",
            ]
        if kind == "record":
            return [f"{ind}{x}, pos = {self._record_function(t)}(buf, pos)"]
        if kind in ("array", "map"):
            return self._dec_collection(t, x, ind)
        raise Unsupported(f"Avro type {kind!r}")

    def _dec_collection(self, t: Mapping[str, Any], x: str, ind: str) -> list[str]:
        n, y, k = self._var("n"), self._var("y"), self._var("k")
        is_map = t["type"] == "map"
        inner = t["values"] if is_map else t["items"]
        lines = [
            f"{ind}{x} = {{}}" if is_map else f"{ind}{x} = []",
            f"{ind}while True:",
            *self._read_long(n, ind + "    "),
            f"{ind}    if not {n}:",
            f"{ind}        break",
            f"{ind}    if {n} < 0:",
            f"{ind}        {n} = -{n}",
            *self._read_long(y, ind + "        "),
            f"{ind}    if {n} > L - pos:",
            f"{ind}        raise _Short()",
            f"{ind}    for _ in range({n}):",
        ]
        body = ind + "        "
        if is_map:
            lines += self._dec("string", k, body)
        lines += self._dec(inner, y, body)
        lines.append(f"{body}{x}[{k}] = {y}" if is_map else f"{body}{x}.append({y})")
        return lines

    def _dec_union(self, branches: list[Any], x: str, ind: str) -> list[str]:
        resolved = [self._resolve(b) for b in branches]
        records = [b for b in resolved if isinstance(b, dict) and b.get("type") == "record"]
        i = self._var("i")
        lines = [*self._read_long(i, ind)]
        first = True
        for index, branch in enumerate(resolved):
            lines.append(f"{ind}{'if' if first else 'elif'} {i} == {index}:")
            first = False
            lines += self._dec(branch, x, ind + "    ") or [f"{ind}    pass"]
            if self.mode == "dict" and len(records) > 1 and branch in records:
                lines.append(f"{ind}    {x} = ({self._record_name(branch)!r}, {x})")
        lines += [f"{ind}else:", f"{ind}    raise _Bad('union index out of range')"]
        return lines
