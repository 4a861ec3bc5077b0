"""User pydantic models <-> :class:`sagaline.schemas.base.Payload` for the pure core.

A thin layer over :mod:`sagaline.schemas.payload` that raises orchestrator errors.
The decider only handles inline payloads (``Payload.data``); a payload stored
by reference must be resolved by the runtime before it reaches ``decide``.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from sagaline.orchestrator.core.errors import OrchestratorError
from sagaline.schemas import payload as wire
from sagaline.schemas.base import Payload
from sagaline.schemas.errors import SchemaError

__all__ = ["PayloadDecodeError", "from_payload", "input_sha256", "payload_type_name", "to_payload"]

ModelT = TypeVar("ModelT", bound=BaseModel)


class PayloadDecodeError(OrchestratorError):
    """A payload is not inline or does not validate against the expected model."""


def payload_type_name(model_type: type[BaseModel]) -> str:
    """The type name a model travels under (:func:`sagaline.schemas.payload.payload_type_name`)."""
    return wire.payload_type_name(model_type)


def to_payload(model: BaseModel) -> Payload:
    """Encode ``model`` as an inline JSON payload."""
    try:
        return wire.to_payload(model)
    except SchemaError as exc:
        raise PayloadDecodeError(str(exc)) from exc


def from_payload(payload: Payload, model_type: type[ModelT]) -> ModelT:
    """Decode an inline payload into ``model_type`` (type name and version are checked)."""
    try:
        return wire.from_payload(payload, model_type)
    except SchemaError as exc:
        raise PayloadDecodeError(str(exc)) from exc


def input_sha256(payload: Payload) -> str:
    """SHA-256 of a payload's type name, version and bytes (``StartSaga.input_sha256``)."""
    return wire.payload_sha256(payload)
