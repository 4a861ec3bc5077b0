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
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import ValidationError

from sagaline.schemas.avro_compiled import Compiled, Short, Unsupported, compile_record
from sagaline.schemas.avrogen import check_bounded, full_name
from sagaline.schemas.base import SCHEMA_NAMESPACE, Record
from sagaline.schemas.codec_plans import dumper, loader
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
    "trusted_decode",
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
    #: compiled from the current schema (``avro_compiled``); None: fastavro only
    compiled: Compiled | None = None


@dataclass(frozen=True)
class _Reader:
    """How to decode bodies written with one writer schema."""

    model: type[Record]
    writer_schema: Any  # parsed
    reader_schema: Any  # parsed current schema, or None when writer == reader
    load: _Converter | None
    #: set on first use when the writer schema is the current one (no resolution)
    current: bool = False


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
                dump=dumper(model),
            )
            self._readers[current.fingerprint] = _Reader(
                model, parsed, None, loader(model), current=True
            )
        #: compiled encoders/decoders, built on a record type's first use
        self._compiled: dict[type[Record], Compiled | None] = {}

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
        compiled = self._compiled_for(writer.model)
        try:
            if compiled is not None:
                body = bytearray(header)
                compiled.encode(record, body)
                return bytes(body)
            out = io.BytesIO()
            out.write(header)
            schemaless_writer(out, writer.schema, writer.dump(record))
            return out.getvalue()
        except Exception as exc:
            raise EncodingError(
                f"cannot encode {writer.name}: {type(exc).__name__}: {exc}"
            ) from exc

    def _compiled_for(self, model: type[Record]) -> Compiled | None:
        """The compiled functions of ``model``'s current schema (None: fastavro)."""
        try:
            return self._compiled[model]
        except KeyError:
            pass
        schema = self.catalogue.current(self._writers[model].name).schema
        try:
            compiled: Compiled | None = compile_record(schema, model)
        except Unsupported:
            compiled = None
        with self._lock:
            return self._compiled.setdefault(model, compiled)

    def _confluent_header(self, writer: _Writer) -> bytes:
        header = self._confluent_headers.get(writer.model)
        if header is None:
            assert self.registry is not None
            schema = dict(self.catalogue.current(writer.name).schema)
            schema_id = self.registry.register(self.subject_strategy(writer.name), schema)
            header = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
            with self._lock:
                self._confluent_headers[writer.model] = header
                current = _Reader(
                    writer.model, writer.schema, None, loader(writer.model), current=True
                )
                self._id_readers.setdefault(schema_id, current)
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
        return self._decode(data, expected, trusted=False)

    def decode_trusted(
        self,
        data: bytes | bytearray | memoryview,
        expected: type[Record] | tuple[type[Record], ...] | None = None,
    ) -> Record:
        """Decode one of sagaline's own records (a hash-chained journal entry, a state
        snapshot) without validating it again: its values were validated when it was
        written, and Avro's types are the record's.  Never for records from outside
        (commands, replies): use :meth:`decode`."""
        return self._decode(data, expected, trusted=True)

    def _decode(
        self,
        data: bytes | bytearray | memoryview,
        expected: type[Record] | tuple[type[Record], ...] | None,
        *,
        trusted: bool,
    ) -> Record:
        reader, offset = self._reader_for(data)
        if expected is not None and not _accepts(expected, reader.model):
            raise UnexpectedRecordType(
                f"message is a {full_name(reader.model)}, expected {_names(expected)}"
            )
        compiled = self._compiled_for(reader.model) if reader.current else None
        if compiled is not None:
            return _compiled_decode(compiled, reader, bytes(data), offset, trusted)
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
        return _Reader(model, writer_parsed, current, loader(model))


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


def trusted_decode(codec: RecordCodec, data: bytes, expected: tuple[type[Record], ...]) -> Record:
    """``codec.decode_trusted`` when ``codec`` is a :class:`Codec`, else ``codec.decode``."""
    if isinstance(codec, Codec):
        return codec.decode_trusted(data, expected)
    return codec.decode(data, expected)


# -- helpers ---------------------------------------------------------------------


def _compiled_decode(
    compiled: Compiled, reader: _Reader, data: bytes, offset: int, trusted: bool
) -> Record:
    """Decode a body written with the current schema through the compiled functions."""
    name = full_name(reader.model)
    decoder = compiled.decode_trusted if trusted else None
    try:
        raw, end = (decoder or compiled.decode_dict)(data, offset)
    except (Short, IndexError, struct.error) as exc:
        raise TruncatedMessage(
            f"{name}: the message ends before the record does ({type(exc).__name__})"
        ) from exc
    except Exception as exc:  # Bad, bad UTF-8, a date out of range...
        raise InvalidRecord(
            f"{name}: the body is not valid Avro for its schema ({type(exc).__name__}: {exc})"
        ) from exc
    if end != len(data):
        raise InvalidRecord(
            f"{name}: {len(data) - end} bytes left over after the record "
            "(corrupted length or concatenated messages)"
        )
    if decoder is not None:
        return raw  # type: ignore[no-any-return]
    try:
        if reader.load is not None:
            raw = reader.load(raw)
        return reader.model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRecord(f"{name}: decoded fields fail validation: {_summary(exc)}") from exc
    except SchemaError:
        raise
    except Exception as exc:
        raise InvalidRecord(f"{name}: {type(exc).__name__}: {exc}") from exc


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
