"""The wire format as the worker uses it: record codec and user payloads.

Thin adapters over ``sagaline.schemas.codec`` (versioned Avro records) and
``sagaline.schemas.payload`` (user pydantic models ⇄ ``Payload``, large ones by
reference through a ``PayloadStore``), kept in one module so the rest of
``consumers`` depends on two small functions and one protocol.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel

from sagaline.schemas import codec as _codec
from sagaline.schemas import payload as _payload
from sagaline.schemas.base import Payload, Record

__all__ = ["Codec", "SchemasCodec", "dump_payload", "load_payload"]


class Codec(Protocol):
    """Record ⇄ bytes (the same protocol as ``sagaline.orchestrator.runtime.ports.Codec``)."""

    def encode(self, record: Record) -> bytes:
        """Encode one record."""
        ...

    def decode(self, data: bytes, expected: tuple[type[Record], ...]) -> Record:
        """Decode one record that must be one of ``expected``; raise ``SchemaError`` otherwise."""
        ...


class SchemasCodec:
    """The production codec: ``sagaline.schemas.codec`` (Avro with a versioned wire header)."""

    def encode(self, record: Record) -> bytes:
        return _codec.encode(record)

    def decode(self, data: bytes, expected: tuple[type[Record], ...]) -> Record:
        return _codec.decode(data, expected)


def load_payload(payload: Payload, model_type: type[BaseModel], store: Any) -> BaseModel:
    """Validate a payload as ``model_type``, fetching referenced bytes from ``store``."""
    return _payload.from_payload(payload, model_type, store=store)


def dump_payload(model: BaseModel, store: Any, threshold: int) -> Payload:
    """A payload for ``model``; stored by reference in ``store`` above ``threshold`` bytes."""
    return _payload.to_payload(model, store=store, threshold=threshold)
