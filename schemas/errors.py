"""Errors raised by the wire layer.

Everything derives from :class:`SchemaError`.  The errors that mean "this
message is bad" derive from :class:`MessageError`: a consumer that catches
``MessageError`` around :func:`sagaline.schemas.codec.decode` has caught every way a
message can be bad; it turns the error into a dead letter
(:func:`sagaline.schemas.deadletter.dead_letter_for`) and moves on.  The one
``SchemaError`` raised by ``decode`` that is not a ``MessageError`` is
:class:`RegistryUnavailable` (the Confluent registry could not be reached):
the message is not at fault, so retry instead of dead-lettering it.  Each error names
its cause in its message and carries ``reason``, a short stable
machine-readable tag (for example ``"truncated"``) that dead letters record.
"""

from __future__ import annotations

__all__ = [
    "BadHeader",
    "EncodingError",
    "IncompatibleSchema",
    "InvalidRecord",
    "MessageError",
    "PayloadError",
    "RegistryError",
    "RegistryUnavailable",
    "SchemaError",
    "SchemaGenerationError",
    "TruncatedMessage",
    "UnexpectedRecordType",
    "UnknownSchema",
]


class SchemaError(Exception):
    """Base of every error of the ``schemas`` package."""

    reason = "schema_error"


class MessageError(SchemaError):
    """The bytes of one message cannot be turned into a valid record (dead-letter it)."""

    reason = "bad_message"


class TruncatedMessage(MessageError):
    """The bytes end before the message does (or are empty)."""

    reason = "truncated"


class BadHeader(MessageError):
    """The bytes do not start with a sagaline wire header (garbage or a foreign format)."""

    reason = "bad_header"


class UnknownSchema(MessageError):
    """The header names a schema (fingerprint or registry id) that nobody here knows."""

    reason = "unknown_schema"


class InvalidRecord(MessageError):
    """The body does not decode into a valid record (bad Avro data, wrong types, validation)."""

    reason = "invalid_record"


class UnexpectedRecordType(InvalidRecord):
    """The message is a valid record, but not of a type the caller accepts here."""

    reason = "unexpected_type"


class EncodingError(SchemaError):
    """A record cannot be encoded (a value does not fit its Avro type)."""

    reason = "encoding"


class SchemaGenerationError(SchemaError):
    """A pydantic model uses a field type that has no Avro mapping."""

    reason = "schema_generation"


class IncompatibleSchema(SchemaError):
    """A schema change breaks readers of data written with a released version."""

    reason = "incompatible_schema"


class RegistryError(SchemaError):
    """The Confluent Schema Registry refused a request or could not be reached."""

    reason = "registry"


class RegistryUnavailable(RegistryError):
    """The registry could not be reached or failed (retry later; the message is not at fault)."""

    reason = "registry_unavailable"


class PayloadError(SchemaError):
    """A user payload does not match the expected model (type name, version, content)."""

    reason = "payload"
