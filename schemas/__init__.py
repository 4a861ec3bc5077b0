"""sagaline wire contracts: Avro schemas, codec, registry.

The records themselves live in their modules (``sagaline.schemas.commands``,
``sagaline.schemas.replies``, ``sagaline.schemas.tasks``, ``sagaline.schemas.events``,
``sagaline.schemas.state``,
``sagaline.schemas.journal``, ``sagaline.schemas.deadletter``); this package exports the
machinery around them::

    from sagaline.schemas import encode, decode, to_payload, from_payload

    data = encode(record)                 # C3 01 + fingerprint + Avro body
    reply = decode(data, StepSucceeded)   # or a tuple of accepted types
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagaline.schemas.avrogen import avro_schema, full_name, record_name
    from sagaline.schemas.base import Envelope, Payload, PayloadRef, Record, Usage
    from sagaline.schemas.codec import Codec, decode, default_codec, encode
    from sagaline.schemas.deadletter import DeadLetter, dead_letter_for
    from sagaline.schemas.errors import (
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
    from sagaline.schemas.payload import (
        PayloadStore,
        from_payload,
        payload_bytes,
        payload_sha256,
        payload_type_name,
        to_payload,
    )
    from sagaline.schemas.registry import Catalogue, ConfluentSchemaRegistry, SchemaVersion

_EXPORTS: dict[str, str] = {
    "BadHeader": "sagaline.schemas.errors",
    "Catalogue": "sagaline.schemas.registry",
    "Codec": "sagaline.schemas.codec",
    "ConfluentSchemaRegistry": "sagaline.schemas.registry",
    "DeadLetter": "sagaline.schemas.deadletter",
    "EncodingError": "sagaline.schemas.errors",
    "Envelope": "sagaline.schemas.base",
    "IncompatibleSchema": "sagaline.schemas.errors",
    "InvalidRecord": "sagaline.schemas.errors",
    "MessageError": "sagaline.schemas.errors",
    "Payload": "sagaline.schemas.base",
    "PayloadError": "sagaline.schemas.errors",
    "PayloadRef": "sagaline.schemas.base",
    "PayloadStore": "sagaline.schemas.payload",
    "Record": "sagaline.schemas.base",
    "RegistryError": "sagaline.schemas.errors",
    "RegistryUnavailable": "sagaline.schemas.errors",
    "SchemaError": "sagaline.schemas.errors",
    "SchemaGenerationError": "sagaline.schemas.errors",
    "SchemaVersion": "sagaline.schemas.registry",
    "TruncatedMessage": "sagaline.schemas.errors",
    "UnexpectedRecordType": "sagaline.schemas.errors",
    "UnknownSchema": "sagaline.schemas.errors",
    "Usage": "sagaline.schemas.base",
    "avro_schema": "sagaline.schemas.avrogen",
    "dead_letter_for": "sagaline.schemas.deadletter",
    "decode": "sagaline.schemas.codec",
    "default_codec": "sagaline.schemas.codec",
    "encode": "sagaline.schemas.codec",
    "from_payload": "sagaline.schemas.payload",
    "full_name": "sagaline.schemas.avrogen",
    "payload_bytes": "sagaline.schemas.payload",
    "payload_sha256": "sagaline.schemas.payload",
    "payload_type_name": "sagaline.schemas.payload",
    "record_name": "sagaline.schemas.avrogen",
    "to_payload": "sagaline.schemas.payload",
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
    # Lazy: ``python -m sagaline.schemas.avrogen`` (and importing ``sagaline.schemas.base`` alone)
    # must not import every module of the package first.
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
