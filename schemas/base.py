"""Base conventions shared by every record on every sagaline topic.

Every record is a frozen pydantic model whose fields use only types that map
onto Avro: ``str``, ``int``, ``float``, ``bool``, ``bytes``, timezone-aware
``datetime`` (Avro ``timestamp-millis``), ``Literal[...]`` of strings (Avro
enum), ``list[X]``, ``dict[str, X]`` (Avro map), ``X | None`` (nullable union
with default ``None``), nested :class:`Record` subclasses, and unions of
:class:`Record` subclasses.  The Avro schemas in ``schemas/avro`` are
generated from these models and committed; compatibility against every
released version is checked by the tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SCHEMA_NAMESPACE", "Envelope", "Payload", "PayloadRef", "Record", "Usage", "utc_ms"]

SCHEMA_NAMESPACE = "dev.sagaline"


def utc_ms(value: datetime) -> datetime:
    """Normalise a datetime to UTC with millisecond precision (Avro timestamp-millis)."""
    if value.tzinfo is None:
        raise ValueError("datetimes on the wire must be timezone-aware")
    value = value.astimezone(UTC)
    return value.replace(microsecond=(value.microsecond // 1000) * 1000)


class Record(BaseModel):
    """Base of every wire record: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Avro record name (without namespace); defaults to the class name.
    avro_name: ClassVar[str | None] = None
    #: Documentation carried into the generated Avro schema.
    avro_doc: ClassVar[str | None] = None

    @model_validator(mode="after")
    def _normalise_datetimes(self) -> Self:
        # one call per record, looking only at the fields that may hold a
        # datetime, rather than a call per field: validation is the decider's
        # hottest path (issue 11)
        values = self.__dict__
        for name in _datetime_fields(type(self)):
            value = values[name]
            if isinstance(value, datetime) and (
                value.tzinfo is not UTC or value.microsecond % 1000
            ):
                values[name] = utc_ms(value)
        return self


_DATETIME_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}


def _datetime_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` whose value may be a datetime (``datetime``, ``datetime | None``)."""
    names = _DATETIME_FIELDS.get(model)
    if names is None:
        names = tuple(
            name
            for name, info in model.model_fields.items()
            if info.annotation is datetime or datetime in get_args(info.annotation)
        )
        _DATETIME_FIELDS[model] = names
    return names


class PayloadRef(Record):
    """Where a large payload's bytes are stored (the Postgres payload store)."""

    sha256: str
    size: int


class Payload(Record):
    """A user payload (a pydantic model) travelling inside a sagaline record.

    ``data`` holds the model's JSON encoding, ``ref`` points at stored bytes
    when the encoding is larger than the configured threshold; exactly one of
    them is set.  ``type_name`` and ``version`` identify the user model so the
    receiving side can validate it.
    """

    type_name: str
    version: int = 1
    content_type: str = "application/json"
    data: bytes | None = None
    ref: PayloadRef | None = None


class Usage(Record):
    """Resources a step reports (fed to saga budgets)."""

    llm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_micros: int = 0  # cost in millionths of the account currency


class Envelope(Record):
    """Metadata carried by every message; ``saga_id`` is also the Kafka key."""

    message_id: str
    saga_id: str
    saga_type: str
    saga_version: int = 1
    occurred_at: datetime
    causation_id: str | None = None
    correlation_id: str | None = None
    #: W3C trace context (``traceparent``/``tracestate``) of the producer.
    trace: dict[str, str] = Field(default_factory=dict)
