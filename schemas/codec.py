"""Records ⇄ bytes: fastavro schemaless encoding behind a versioned wire header.

Wire format of every sagaline message value:

* **Avro single-object encoding** (default): ``C3 01``, the 8-byte
  little-endian CRC-64-AVRO fingerprint of the writer schema's canonical
  form, then the Avro binary body.  The fingerprint is looked up in the
  :class:`~sagaline.schemas.registry.Catalogue` (current and released schemas).
* **Confluent wire format** (when a :class:`~sagaline.schemas.registry.ConfluentSchemaRegistry`
  is configured): ``00``, the 4-byte big-endian schema id, then the body.
  Ids are registered/looked up under the record-name subject and cached.

A codec with a registry encodes in the Confluent format and decodes both.

Decoding resolves the writer schema to the current reader schema of the same
record (Avro schema resolution: new fields take their defaults, removed ones
are skipped, unknown enum symbols take the enum's default), then validates the
result into the pydantic model.  Unions of records keep their branch: the
record name travels in the Avro union index, never guessed from the shape.

Every failure of :meth:`Codec.decode` is a :class:`~sagaline.schemas.errors.SchemaError`
naming its cause; malformed input raises a :class:`~sagaline.schemas.errors.MessageError`.
"""

from __future__ import annotations

import copy
import functools
import io
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import ValidationError

from sagaline.schemas._introspect import (
    is_enum_class,
    is_record_class,
    mapping_value,
    record_branches,
    sequence_item,
    union_members,
    unwrap,
)
from sagaline.schemas.avrogen import check_bounded, full_name
from sagaline.schemas.base import SCHEMA_NAMESPACE, Record
from sagaline.schemas.errors import (
    BadHeader,
    EncodingError,
    InvalidRecord,
    SchemaError,
    TruncatedMessage,
    UnexpectedRecordType,
    UnknownSchema,
)
from sagaline.schemas.registry import (
    Catalogue,
    ConfluentSchemaRegistry,
    SchemaVersion,
    SubjectStrategy,
    record_name_subject,
    schema_fingerprint,
)

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_MAGIC",
    "Codec",
    "RecordCodec",
    "decode",
    "default_codec",
    "encode",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_HEADER_LEN = 10
_CONFLUENT_HEADER_LEN = 5

R = TypeVar("R", bound=Record)
_Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class _Writer:
    """How to encode one record class."""

    model: type[Record]
    name: str
    schema: Any  # fastavro-parsed current schema
    header: bytes  # single-object header
    dump: Callable[[Record], dict[str, Any]]


@dataclass(frozen=True)
class _Reader:
    """How to decode bodies written with one writer schema."""

    model: type[Record]
    writer_schema: Any  # parsed
    reader_schema: Any  # parsed current schema, or None when writer == reader
    load: _Converter | None


class RecordCodec(Protocol):
    """Record ⇄ bytes: the one codec protocol every Kafka client of sagaline is written
    against (the orchestrator runtime, the workers, the journal reader).

    :class:`Codec` is the one implementation (versioned Avro); tests may pass any
    object with these two methods.
    """

    def encode(self, record: Record) -> bytes:
        """Encode one record."""
        ...

    def decode(self, data: bytes, expected: tuple[type[Record], ...]) -> Record:
        """Decode one record that must be one of ``expected``; raise ``SchemaError`` otherwise."""
        ...


class Codec:
    """Encode and decode sagaline records (thread-safe; build once, share).

    ``catalogue`` defaults to :meth:`Catalogue.default` (every record in
    :data:`sagaline.schemas.catalog.ALL_RECORDS` plus ``schemas/released``).  With a
    ``registry``, :meth:`encode` writes the Confluent format, registering each
    record's current schema under ``subject_strategy(full_name)`` once.
    """

    def __init__(
        self,
        catalogue: Catalogue | None = None,
        *,
        registry: ConfluentSchemaRegistry | None = None,
        subject_strategy: SubjectStrategy = record_name_subject,
    ) -> None:
        self.catalogue = catalogue if catalogue is not None else Catalogue.default()
        self.registry = registry
        self.subject_strategy = subject_strategy
        self._lock = threading.Lock()
        self._writers: dict[type[Record], _Writer] = {}
        self._readers: dict[bytes, _Reader] = {}
        self._id_readers: dict[int, _Reader] = {}
        self._confluent_headers: dict[type[Record], bytes] = {}
        for name, model in self.catalogue.models.items():
            current = self.catalogue.current(name)
            parsed = _parse(current.schema)
            self._writers[model] = _Writer(
                model=model,
                name=name,
                schema=parsed,
                header=SINGLE_OBJECT_MAGIC + current.fingerprint,
                dump=_dumper(model),
            )
            self._readers[current.fingerprint] = _Reader(model, parsed, None, _loader(model))

    # -- encode ----------------------------------------------------------------

    def encode(self, record: Record) -> bytes:
        """The wire bytes of ``record`` (header + Avro body)."""
        writer = self._writers.get(type(record))
        if writer is None:
            raise EncodingError(
                f"{type(record).__qualname__} is not in the codec's catalogue; add it to "
                "sagaline.schemas.catalog.ALL_RECORDS (or pass a Catalogue that lists it)"
            )
        header = writer.header if self.registry is None else self._confluent_header(writer)
        out = io.BytesIO()
        out.write(header)
        try:
            schemaless_writer(out, writer.schema, writer.dump(record))
        except Exception as exc:
            raise EncodingError(
                f"cannot encode {writer.name}: {type(exc).__name__}: {exc}"
            ) from exc
        return out.getvalue()

    def _confluent_header(self, writer: _Writer) -> bytes:
        header = self._confluent_headers.get(writer.model)
        if header is None:
            assert self.registry is not None
            schema = dict(self.catalogue.current(writer.name).schema)
            schema_id = self.registry.register(self.subject_strategy(writer.name), schema)
            header = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
            with self._lock:
                self._confluent_headers[writer.model] = header
                self._id_readers.setdefault(
                    schema_id, _Reader(writer.model, writer.schema, None, _loader(writer.model))
                )
        return header

    # -- decode ----------------------------------------------------------------

    @overload
    def decode(self, data: bytes | bytearray | memoryview, expected: type[R]) -> R: ...

    @overload
    def decode(
        self,
        data: bytes | bytearray | memoryview,
        expected: tuple[type[Record], ...] | None = None,
    ) -> Record: ...

    def decode(
        self,
        data: bytes | bytearray | memoryview,
        expected: type[Record] | tuple[type[Record], ...] | None = None,
    ) -> Record:
        """Decode one message; ``expected`` restricts the accepted record type(s)."""
        reader, offset = self._reader_for(data)
        if expected is not None and not _accepts(expected, reader.model):
            raise UnexpectedRecordType(
                f"message is a {full_name(reader.model)}, expected {_names(expected)}"
            )
        buffer = io.BytesIO(data)
        buffer.seek(offset)
        try:
            raw = schemaless_reader(
                buffer,
                reader.writer_schema,
                reader.reader_schema,
                return_record_name=True,
                return_record_name_override=True,
            )
        except Exception as exc:
            if isinstance(exc, EOFError) or buffer.tell() >= len(data):
                raise TruncatedMessage(
                    f"{full_name(reader.model)}: the message ends before the record does "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            raise InvalidRecord(
                f"{full_name(reader.model)}: the body is not valid Avro for its schema "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        extra = len(data) - buffer.tell()
        if extra:
            raise InvalidRecord(
                f"{full_name(reader.model)}: {extra} bytes left over after the record "
                "(corrupted length or concatenated messages)"
            )
        try:
            if reader.load is not None:
                raw = reader.load(raw)
            return reader.model.model_validate(raw)
        except ValidationError as exc:
            raise InvalidRecord(
                f"{full_name(reader.model)}: decoded fields fail validation: {_summary(exc)}"
            ) from exc
        except SchemaError:
            raise
        except Exception as exc:
            raise InvalidRecord(f"{full_name(reader.model)}: {type(exc).__name__}: {exc}") from exc

    def writer_schema(self, data: bytes | bytearray | memoryview) -> SchemaVersion:
        """The catalogued writer schema named by a single-object header (for diagnostics)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BadHeader(f"expected bytes, got {type(data).__name__}")
        if bytes(data[:2]) != SINGLE_OBJECT_MAGIC or len(data) < _SINGLE_HEADER_LEN:
            raise BadHeader("not an Avro single-object encoded message")
        return self.catalogue.by_fingerprint(bytes(data[2:_SINGLE_HEADER_LEN]))

    def _reader_for(self, data: object) -> tuple[_Reader, int]:
        if data is None:
            raise TruncatedMessage("no bytes: the message value is None (a tombstone?)")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BadHeader(f"expected bytes, got {type(data).__name__}")
        size = len(data)
        if size == 0:
            raise TruncatedMessage("no bytes: the message value is empty")
        first = data[0]
        if first == SINGLE_OBJECT_MAGIC[0]:
            if size < 2 or data[1] != SINGLE_OBJECT_MAGIC[1]:
                if size < 2:
                    raise TruncatedMessage("1 byte: the single-object header is cut short")
                raise BadHeader(
                    f"header {bytes(data[:2]).hex()} is not single-object encoding (c301)"
                )
            if size < _SINGLE_HEADER_LEN:
                raise TruncatedMessage(
                    f"{size} bytes: the single-object header needs {_SINGLE_HEADER_LEN}"
                )
            return self._by_fingerprint(bytes(data[2:_SINGLE_HEADER_LEN])), _SINGLE_HEADER_LEN
        if first == CONFLUENT_MAGIC[0]:
            if size < _CONFLUENT_HEADER_LEN:
                raise TruncatedMessage(
                    f"{size} bytes: the Confluent header needs {_CONFLUENT_HEADER_LEN}"
                )
            schema_id = int.from_bytes(data[1:_CONFLUENT_HEADER_LEN], "big")
            return self._by_id(schema_id), _CONFLUENT_HEADER_LEN
        raise BadHeader(
            f"first byte 0x{first:02x} starts neither Avro single-object encoding (c301) "
            "nor the Confluent wire format (00): not a sagaline message"
        )

    def _by_fingerprint(self, fp: bytes) -> _Reader:
        reader = self._readers.get(fp)
        if reader is not None:
            return reader
        version = self.catalogue.by_fingerprint(fp)  # raises UnknownSchema
        reader = self._resolving_reader(version.schema, f"fingerprint {fp.hex()}")
        with self._lock:
            self._readers[fp] = reader
        return reader

    def _by_id(self, schema_id: int) -> _Reader:
        reader = self._id_readers.get(schema_id)
        if reader is not None:
            return reader
        if self.registry is None:
            raise UnknownSchema(
                f"Confluent-framed message with schema id {schema_id}, but this codec has no "
                "schema registry configured"
            )
        schema = self.registry.schema_by_id(schema_id)
        try:
            fp = schema_fingerprint(schema)
        except Exception as exc:
            raise UnknownSchema(f"registry schema id {schema_id} is not valid Avro: {exc}") from exc
        known = self._readers.get(fp)
        reader = known or self._resolving_reader(schema, f"registry schema id {schema_id}")
        with self._lock:
            self._id_readers[schema_id] = reader
        return reader

    def _resolving_reader(self, writer: Mapping[str, Any], what: str) -> _Reader:
        name = _schema_full_name(writer)
        model = self.catalogue.model(name)  # raises UnknownSchema
        try:
            check_bounded(dict(writer))
            writer_parsed = _parse(writer)
        except Exception as exc:
            raise UnknownSchema(f"{what}: writer schema of {name} is unusable: {exc}") from exc
        current = self._writers[model].schema
        return _Reader(model, writer_parsed, current, _loader(model))


# -- module-level convenience ---------------------------------------------------


@functools.cache
def default_codec() -> Codec:
    """The shared codec over :meth:`Catalogue.default` (single-object encoding)."""
    return Codec()


def encode(record: Record) -> bytes:
    """Encode with :func:`default_codec`."""
    return default_codec().encode(record)


@overload
def decode(data: bytes | bytearray | memoryview, expected: type[R]) -> R: ...


@overload
def decode(
    data: bytes | bytearray | memoryview, expected: tuple[type[Record], ...] | None = None
) -> Record: ...


def decode(
    data: bytes | bytearray | memoryview,
    expected: type[Record] | tuple[type[Record], ...] | None = None,
) -> Record:
    """Decode with :func:`default_codec`."""
    return default_codec().decode(data, expected)


# -- helpers ---------------------------------------------------------------------


def _parse(schema: Mapping[str, Any]) -> Any:
    return parse_schema(copy.deepcopy(dict(schema)))


def _schema_full_name(schema: Mapping[str, Any]) -> str:
    name = str(schema.get("name", ""))
    if "." in name:
        return name
    namespace = schema.get("namespace") or SCHEMA_NAMESPACE
    return f"{namespace}.{name}"


def _accepts(expected: type[Record] | tuple[type[Record], ...], model: type[Record]) -> bool:
    if isinstance(expected, tuple):
        return any(issubclass(model, e) for e in expected)
    return issubclass(model, expected)


def _names(expected: type[Record] | tuple[type[Record], ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(t.__qualname__ for t in types) or "nothing"


def _summary(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


# Encoding plans: Record → the plain dicts fastavro writes.  Records inside a
# union travel in fastavro's tuple notation ``(full name, dict)`` so the branch
# is explicit (two records of the same shape stay distinct, and fastavro need
# not validate every branch to choose one).


@functools.cache
def _dumper(model: type[Record]) -> Callable[[Record], dict[str, Any]]:
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


def _encoder(tp: Any) -> _Converter | None:
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
                return (name, _dumper(cls)(value))
            for enc in other_encs:
                value = enc(value)
            return value

        return union_value
    if is_record_class(tp):
        model: type[Record] = tp
        return lambda value: _dumper(model)(value)
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


def _loader(model: type[Record]) -> _Converter | None:
    return _record_loader(model, frozenset())


def _record_loader(model: type[Record], stack: frozenset[type[Record]]) -> _Converter | None:
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


def _decoder(tp: Any, stack: frozenset[type[Record]]) -> _Converter | None:
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
