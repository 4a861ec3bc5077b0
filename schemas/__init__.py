"""sagaline wire contracts: Avro schemas, codec, registry.

The records themselves live in their modules (``schemas.commands``,
``schemas.replies``, ``schemas.tasks``, ``schemas.events``, ``schemas.state``,
``schemas.journal``, ``schemas.deadletter``); this package exports the
machinery around them::

    from schemas import encode, decode, to_payload, from_payload

    data = encode(record)                 # C3 01 + fingerprint + Avro body
    reply = decode(data, StepSucceeded)   # or a tuple of accepted types
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.avrogen import avro_schema, full_name, record_name
    from schemas.base import Envelope, Payload, PayloadRef, Record, Usage
    from schemas.codec import Codec, decode, default_codec, encode
    from schemas.deadletter import DeadLetter, dead_letter_for
    from schemas.errors import (
        BadHeader,
        EncodingError,
        IncompatibleSchema,
        InvalidRecord,
        MessageError,
        PayloadError,
        RegistryError,
        RegistryUnavailable,
        SchemaError,
        SchemaGenerationError,
        TruncatedMessage,
        UnexpectedRecordType,
        UnknownSchema,
    )
    from schemas.payload import (
        PayloadStore,
        from_payload,
        payload_bytes,
        payload_sha256,
        payload_type_name,
        to_payload,
    )
    from schemas.registry import Catalogue, ConfluentSchemaRegistry, SchemaVersion

_EXPORTS: dict[str, str] = {
    "BadHeader": "schemas.errors",
    "Catalogue": "schemas.registry",
    "Codec": "schemas.codec",
    "ConfluentSchemaRegistry": "schemas.registry",
    "DeadLetter": "schemas.deadletter",
    "EncodingError": "schemas.errors",
    "Envelope": "schemas.base",
    "IncompatibleSchema": "schemas.errors",
    "InvalidRecord": "schemas.errors",
    "MessageError": "schemas.errors",
    "Payload": "schemas.base",
    "PayloadError": "schemas.errors",
    "PayloadRef": "schemas.base",
    "PayloadStore": "schemas.payload",
    "Record": "schemas.base",
    "RegistryError": "schemas.errors",
    "RegistryUnavailable": "schemas.errors",
    "SchemaError": "schemas.errors",
    "SchemaGenerationError": "schemas.errors",
    "SchemaVersion": "schemas.registry",
    "TruncatedMessage": "schemas.errors",
    "UnexpectedRecordType": "schemas.errors",
    "UnknownSchema": "schemas.errors",
    "Usage": "schemas.base",
    "avro_schema": "schemas.avrogen",
    "dead_letter_for": "schemas.deadletter",
    "decode": "schemas.codec",
    "default_codec": "schemas.codec",
    "encode": "schemas.codec",
    "from_payload": "schemas.payload",
    "full_name": "schemas.avrogen",
    "payload_bytes": "schemas.payload",
    "payload_sha256": "schemas.payload",
    "payload_type_name": "schemas.payload",
    "record_name": "schemas.avrogen",
    "to_payload": "schemas.payload",
}

__all__ = [
    "BadHeader",
    "Catalogue",
    "Codec",
    "ConfluentSchemaRegistry",
    "DeadLetter",
    "EncodingError",
    "Envelope",
    "IncompatibleSchema",
    "InvalidRecord",
    "MessageError",
    "Payload",
    "PayloadError",
    "PayloadRef",
    "PayloadStore",
    "Record",
    "RegistryError",
    "RegistryUnavailable",
    "SchemaError",
    "SchemaGenerationError",
    "SchemaVersion",
    "TruncatedMessage",
    "UnexpectedRecordType",
    "UnknownSchema",
    "Usage",
    "avro_schema",
    "dead_letter_for",
    "decode",
    "default_codec",
    "encode",
    "from_payload",
    "full_name",
    "payload_bytes",
    "payload_sha256",
    "payload_type_name",
    "record_name",
    "to_payload",
]


def __getattr__(name: str) -> Any:
    # Lazy: ``python -m schemas.avrogen`` (and importing ``schemas.base`` alone)
    # must not import every module of the package first.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
