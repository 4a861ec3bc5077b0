"""Keep secrets off every page: saga data fields and database URLs.

The saga definitions have no way to mark a field secret yet, so every field
whose name contains ``password``, ``secret``, ``token`` or ``api_key`` (any
case, ``api-key`` and ``apikey`` too) is shown as :data:`REDACTED`, at any
depth.  A database URL's password is hidden by :func:`redact_url` (shared with
:mod:`sagaline.orchestrator.config`, which owns the one implementation).
"""

from __future__ import annotations

import json
from typing import Any

from sagaline.orchestrator.config import is_secret_name, redact_url
from sagaline.schemas.base import Payload

__all__ = ["REDACTED", "is_secret_name", "payload_view", "redact", "redact_url"]

REDACTED = "••••• (redacted)"


def redact(value: Any) -> Any:
    """``value`` with every secret-named field, at any depth, replaced by :data:`REDACTED`."""
    if isinstance(value, dict):
        return {
            k: REDACTED if is_secret_name(str(k)) and v is not None else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def payload_view(payload: Payload | None) -> Any:
    """A payload's JSON, redacted; a short note for stored or non-JSON payloads."""
    if payload is None:
        return None
    if payload.data is None:
        size = payload.ref.size if payload.ref else 0
        return f"({payload.type_name}: {size} bytes in the payload store)"
    try:
        return redact(json.loads(payload.data))
    except ValueError:
        return f"({payload.type_name}: {len(payload.data)} bytes, not JSON)"
