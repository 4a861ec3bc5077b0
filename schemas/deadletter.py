"""Dead-letter records: a message someone refused, with the reason.

A consumer that cannot use a message (bytes that do not decode, a record of
the wrong type, an input that breaks an invariant) writes a
:class:`DeadLetter` to the dead-letter topic and moves on, so one bad message
never crashes a consumer or stalls its partition.  Build it with
:func:`dead_letter_for`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sagaline.schemas.base import Record

__all__ = ["MAX_REASON_CHARS", "DeadLetter", "KafkaHeaders", "dead_letter_for"]

#: Reasons longer than this are cut (a validation error can be very long).
MAX_REASON_CHARS = 4000

KafkaHeaders = Iterable[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]
"""Headers as confluent-kafka returns them (a list of pairs) or as a mapping."""


class DeadLetter(Record):
    """The original bytes of a rejected message and why it was rejected.

    ``error_type`` is the exception's class name; ``error_code`` (when the
    error is a ``sagaline.schemas.errors.SchemaError``) its stable short tag, for
    example ``truncated``, ``bad_header``, ``unknown_schema`` or
    ``invalid_record``.
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
    that repeats keeps its last value.
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
    return DeadLetter(
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
