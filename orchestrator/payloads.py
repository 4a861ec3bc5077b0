"""User pydantic models <-> :class:`schemas.base.Payload` for the pure core.

The decider only handles inline payloads (``Payload.data``); a payload stored
by reference must be resolved by the runtime before it reaches ``decide``.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from orchestrator.errors import OrchestratorError
from schemas.base import Payload

__all__ = ["PayloadDecodeError", "from_payload", "input_sha256", "payload_type_name", "to_payload"]

ModelT = TypeVar("ModelT", bound=BaseModel)


class PayloadDecodeError(OrchestratorError):
    """A payload is not inline or does not validate against the expected model."""


def payload_type_name(model_type: type[BaseModel]) -> str:
    """The type name a model travels under (``payload_type`` class attribute, else class name)."""
    explicit = getattr(model_type, "payload_type", None)
    return explicit if isinstance(explicit, str) else model_type.__name__


def to_payload(model: BaseModel) -> Payload:
    """Encode ``model`` as an inline JSON payload."""
    version = getattr(type(model), "payload_version", 1)
    return Payload(
        type_name=payload_type_name(type(model)),
        version=version if isinstance(version, int) else 1,
        data=model.model_dump_json().encode(),
    )


def from_payload(payload: Payload, model_type: type[ModelT]) -> ModelT:
    """Decode an inline payload into ``model_type``."""
    if payload.data is None:
        raise PayloadDecodeError(
            f"payload {payload.type_name} is stored by reference; resolve it before deciding"
        )
    try:
        return model_type.model_validate_json(payload.data)
    except ValidationError as exc:
        raise PayloadDecodeError(
            f"payload {payload.type_name} is not a valid {model_type.__name__}: {exc}"
        ) from exc


def input_sha256(payload: Payload) -> str:
    """SHA-256 of a payload's type name, version and bytes (``StartSaga.input_sha256``)."""
    h = hashlib.sha256()
    h.update(f"{payload.type_name}\x1f{payload.version}\x1f".encode())
    h.update(payload.data or b"")
    if payload.ref is not None:
        h.update(payload.ref.sha256.encode())
    return h.hexdigest()
