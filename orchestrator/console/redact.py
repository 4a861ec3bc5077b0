"""Keep secrets off every page: saga data fields and database URLs.

The saga definitions have no way to mark a field secret yet, so every field
whose name contains ``password``, ``secret``, ``token`` or ``api_key`` (any
case, ``api-key`` and ``apikey`` too) is shown as :data:`REDACTED`, at any
depth.  A URL's password is replaced the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from sagaline.schemas.base import Payload

__all__ = ["REDACTED", "is_secret_name", "payload_view", "redact", "redact_url"]

REDACTED = "••••• (redacted)"
_SECRET = re.compile(r"password|passwd|secret|token|api[_-]?key", re.IGNORECASE)
_USAGE_COUNTERS = frozenset({"tokens_in", "tokens_out"})  # counts, not credentials


def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (see the module docstring)."""
    return name not in _USAGE_COUNTERS and _SECRET.search(name) is not None


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


def redact_url(url: str) -> str:
    """``url`` with its password replaced (``postgresql://u:•••@host/db``), in the user
    part and in the query (``?password=...``, or any secret-named parameter)."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(is_secret_name(k) for k, _ in query):
        shown = [(k, REDACTED if is_secret_name(k) else v) for k, v in query]
        parts = parts._replace(query="&".join(f"{k}={v}" for k, v in shown))  # for display
    return urlunsplit(parts)


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
