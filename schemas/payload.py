"""User payloads: a pydantic model ⇄ :class:`~sagaline.schemas.base.Payload`.

Saga data, step arguments and step results are pydantic models chosen by the
user.  On the wire they are a ``Payload``: the model's JSON encoding
(``model_dump_json()``) with the model's stable type name and version, so the
receiving side can check it got what it expects before validating it.

* ``type_name`` is the model's ``payload_type`` class attribute when it
  declares one (recommended: it survives moving the class), else
  ``module.QualName``.  ``version`` is its ``payload_version`` (default 1).
* Encodings larger than ``threshold`` bytes (64 KiB by default) are stored
  through a :class:`PayloadStore` and the payload carries a
  :class:`~sagaline.schemas.base.PayloadRef` (sha256 + size) instead of the bytes.
  ``sagaline.consumers.payload_store.PostgresPayloadStore`` is the production store.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from sagaline.schemas.base import Payload, PayloadRef
from sagaline.schemas.errors import PayloadError

__all__ = [
    "DEFAULT_THRESHOLD",
    "JSON",
    "PayloadStore",
    "from_payload",
    "payload_bytes",
    "payload_sha256",
    "payload_type_name",
    "payload_version",
    "to_payload",
]

DEFAULT_THRESHOLD = 64 * 1024
JSON = "application/json"

M = TypeVar("M", bound=BaseModel)


@runtime_checkable
class PayloadStore(Protocol):
    """Content-addressed storage for payload bytes too large to travel inline."""

    def put(self, data: bytes) -> PayloadRef:
        """Store ``data`` (idempotently) and return where it is."""
        ...

    def get(self, ref: PayloadRef) -> bytes:
        """The bytes stored under ``ref``."""
        ...


def payload_type_name(model_type: type[BaseModel]) -> str:
    """The stable name a model travels under (``payload_type`` or ``module.QualName``)."""
    explicit = getattr(model_type, "payload_type", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    return f"{model_type.__module__}.{model_type.__qualname__}"


def payload_version(model_type: type[BaseModel]) -> int:
    """The model's ``payload_version`` class attribute (default 1)."""
    version = getattr(model_type, "payload_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PayloadError(
            f"{model_type.__qualname__}.payload_version must be a positive int, got {version!r}"
        )
    return version


def to_payload(
    model: BaseModel,
    *,
    store: PayloadStore | None = None,
    threshold: int = DEFAULT_THRESHOLD,
) -> Payload:
    """Encode ``model``; above ``threshold`` bytes (and with a ``store``) by reference."""
    model_type = type(model)
    data = model.model_dump_json().encode("utf-8")
    type_name = payload_type_name(model_type)
    version = payload_version(model_type)
    if store is not None and len(data) > threshold:
        ref = store.put(data)
        if ref.size != len(data):
            raise PayloadError(f"payload store returned size {ref.size} for {len(data)} bytes")
        return Payload(type_name=type_name, version=version, content_type=JSON, ref=ref)
    return Payload(type_name=type_name, version=version, content_type=JSON, data=data)


def payload_bytes(payload: Payload, *, store: PayloadStore | None = None) -> bytes:
    """The encoded bytes of a payload, fetched from ``store`` when it is a reference."""
    if payload.data is not None:
        return payload.data
    if payload.ref is None:
        raise PayloadError(f"payload {payload.type_name} has neither data nor a reference")
    if store is None:
        raise PayloadError(
            f"payload {payload.type_name} is stored by reference ({payload.ref.sha256}, "
            f"{payload.ref.size} bytes) and no payload store was given"
        )
    data = store.get(payload.ref)
    if len(data) != payload.ref.size or hashlib.sha256(data).hexdigest() != payload.ref.sha256:
        raise PayloadError(f"stored payload {payload.ref.sha256} does not match its reference")
    return data


def from_payload(payload: Payload, model_type: type[M], *, store: PayloadStore | None = None) -> M:
    """Validate ``payload`` into ``model_type``, checking its type name and version."""
    expected_name = payload_type_name(model_type)
    if payload.type_name != expected_name:
        raise PayloadError(
            f"payload is a {payload.type_name!r}, expected {expected_name!r} "
            f"({model_type.__qualname__})"
        )
    expected_version = payload_version(model_type)
    if payload.version != expected_version:
        raise PayloadError(
            f"payload {payload.type_name!r} has version {payload.version}, "
            f"{model_type.__qualname__} is version {expected_version}"
        )
    if payload.content_type != JSON:
        raise PayloadError(f"payload content type {payload.content_type!r} is not {JSON!r}")
    data = payload_bytes(payload, store=store)
    try:
        return model_type.model_validate_json(data)
    except ValidationError as exc:
        raise PayloadError(
            f"payload {payload.type_name!r} is not a valid {model_type.__qualname__}: "
            f"{exc.error_count()} error(s): {exc.errors()[0]['msg'] if exc.errors() else exc}"
        ) from exc


def payload_sha256(payload: Payload) -> str:
    """SHA-256 over a payload's type name, version and content (``StartSaga.input_sha256``).

    The same digest as ``sagaline.orchestrator.core.payloads.input_sha256``: the type name,
    ``0x1F``, the version, ``0x1F``, the inline bytes, then the reference's
    sha256 when the payload is stored by reference.
    """
    h = hashlib.sha256()
    h.update(f"{payload.type_name}\x1f{payload.version}\x1f".encode())
    h.update(payload.data or b"")
    if payload.ref is not None:
        h.update(payload.ref.sha256.encode())
    return h.hexdigest()
