"""The wire format as the worker uses it: record codec and user payloads.

The codec is ``sagaline.schemas.codec``'s (one protocol, one implementation); payloads are
``sagaline.schemas.payload`` (user pydantic models ⇄ ``Payload``, large ones by
reference through a ``PayloadStore``), kept in one module so the rest of
``consumers`` depends on two small functions and one protocol.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sagaline.schemas import payload as _payload
from sagaline.schemas.base import Payload
from sagaline.schemas.codec import RecordCodec, default_codec

__all__ = ["Codec", "SchemasCodec", "dump_payload", "load_payload"]


#: Record ⇄ bytes: the one codec protocol (``sagaline.schemas.codec.RecordCodec``)
Codec = RecordCodec

#: ``SchemasCodec()`` is the shared production codec (``sagaline.schemas.codec.default_codec``)
SchemasCodec = default_codec


def load_payload(payload: Payload, model_type: type[BaseModel], store: Any) -> BaseModel:
    """Validate a payload as ``model_type``, fetching referenced bytes from ``store``."""
    return _payload.from_payload(payload, model_type, store=store)


def dump_payload(model: BaseModel, store: Any, threshold: int) -> Payload:
    """A payload for ``model``; stored by reference in ``store`` above ``threshold`` bytes."""
    return _payload.to_payload(model, store=store, threshold=threshold)
