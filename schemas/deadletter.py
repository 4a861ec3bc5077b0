"""Dead-letter records: a message someone refused, with the reason.

A consumer that cannot use a message (bytes that do not decode, a record of
the wrong type, an input that breaks an invariant) writes a
:class:`DeadLetter` to the dead-letter topic and moves on, so one bad message
never crashes a consumer or stalls its partition.  Build it with
:func:`dead_letter_for`.

A dead letter always fits on the dead-letter topic, whatever the size of the
original: its value is kept up to :data:`MAX_ORIGINAL_VALUE_BYTES`, its key up to
:data:`MAX_ORIGINAL_KEY_BYTES` and its headers up to
:data:`MAX_ORIGINAL_HEADER_BYTES` in total.  When anything was cut, ``truncated``
is true and ``value_length`` / ``value_sha256`` describe the whole original value,
which stays findable at ``source_topic`` / ``source_partition`` /
``source_offset`` for as long as that topic retains it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime

from sagaline.schemas.base import Record

__all__ = [
    "MAX_ORIGINAL_HEADER_BYTES",
    "MAX_ORIGINAL_KEY_BYTES",
    "MAX_ORIGINAL_VALUE_BYTES",
    "MAX_REASON_CHARS",
    "DeadLetter",
    "KafkaHeaders",
    "bounded",
    "dead_letter_for",
]

#: Reasons longer than this are cut (a validation error can be very long).
MAX_REASON_CHARS = 4000
#: At most this many bytes of the original value are kept (the rest: length + SHA-256).
MAX_ORIGINAL_VALUE_BYTES = 64 * 1024
#: At most this many bytes of the original key are kept.
MAX_ORIGINAL_KEY_BYTES = 1024
#: Headers are kept, in order, while their names and values total at most this.
MAX_ORIGINAL_HEADER_BYTES = 16 * 1024

KafkaHeaders = Iterable[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]
"""Headers as confluent-kafka returns them (a list of pairs) or as a mapping."""


class DeadLetter(Record):
    """The original bytes of a rejected message and why it was rejected.

    ``error_type`` is the exception's class name; ``error_code`` (when the
    error is a ``sagaline.schemas.errors.SchemaError``) its stable short tag, for
    example ``truncated``, ``bad_header``, ``unknown_schema`` or
    ``invalid_record``.  ``truncated`` is true when the key, value or headers
    were cut to fit; ``value_length`` and ``value_sha256`` (hex) then describe
    the original value, which is found at its source topic, partition and offset.
    """

    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: dict[str, bytes] = {}
    reason: str
    error_type: str
    rejected_by: str
    rejected_at: datetime
    error_code: str | None = None
    truncated: bool = False
    value_length: int | None = None
    value_sha256: str | None = None


def bounded(letter: DeadLetter) -> DeadLetter:
    """``letter`` with its key, value and headers cut so that it always fits.

    Idempotent; a letter that already fits is returned unchanged.
    """
    key, value = letter.key, letter.value
    headers = _bounded_headers(letter.headers)
    cut = len(headers) != len(letter.headers)
    update: dict[str, object] = {}
    if key is not None and len(key) > MAX_ORIGINAL_KEY_BYTES:
        update["key"] = key[:MAX_ORIGINAL_KEY_BYTES]
        cut = True
    if value is not None and len(value) > MAX_ORIGINAL_VALUE_BYTES:
        update["value"] = value[:MAX_ORIGINAL_VALUE_BYTES]
        update["value_length"] = len(value)
        update["value_sha256"] = hashlib.sha256(value).hexdigest()
        cut = True
    if len(letter.reason) > MAX_REASON_CHARS:
        update["reason"] = letter.reason[: MAX_REASON_CHARS - 1] + "…"
    if not cut and not update:
        return letter
    if cut:
        update["truncated"] = True
        update["headers"] = headers
    return letter.model_copy(update=update)


def _bounded_headers(headers: Mapping[str, bytes]) -> dict[str, bytes]:
    kept: dict[str, bytes] = {}
    total = 0
    for name, value in headers.items():
        size = len(name.encode("utf-8")) + len(value)
        if total + size > MAX_ORIGINAL_HEADER_BYTES:
            continue
        kept[name] = value
        total += size
    return kept


def dead_letter_for(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: KafkaHeaders | None,
    error: BaseException | str,
    rejected_by: str,
    at: datetime,
) -> DeadLetter:
    """The dead letter for one refused message.

    ``error`` is the exception that refused it (or a plain reason);
    ``rejected_by`` names the consumer (for example ``orchestrator`` or
    ``worker:billing``); ``at`` is when, timezone-aware.  Header values that
    are ``None`` are dropped and ``str`` values UTF-8 encoded; a header name
    that repeats keeps its last value.  The letter is :func:`bounded`.
    """
    if isinstance(error, BaseException):
        reason = str(error) or type(error).__name__
        error_type = type(error).__name__
        code = getattr(error, "reason", None)
        error_code = code if isinstance(code, str) else None
    else:
        reason, error_type, error_code = error, "Rejected", None
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    letter = DeadLetter(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        key=key,
        value=value,
        headers=_headers(headers),
        reason=reason,
        error_type=error_type,
        rejected_by=rejected_by,
        rejected_at=at,
        error_code=error_code,
    )
    return bounded(letter)


def _headers(headers: KafkaHeaders | None) -> dict[str, bytes]:
    if headers is None:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, bytes] = {}
    for name, value in pairs:
        if value is None:
            continue
        out[str(name)] = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return out
