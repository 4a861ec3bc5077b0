"""``Limit``: what a step or an agent's LLM turns declare to share a key's slots."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from sagaline.orchestrator.core.errors import SagaDefinitionError

__all__ = ["Limit", "limiter_id"]

D = TypeVar("D")


def limiter_id(name: str, key: str) -> str:
    """The id (Kafka key) of the limiter of limit ``name`` for ``key``."""
    return f"limit:{name}:{key}"


@dataclass(frozen=True)
class Limit(Generic[D]):
    """At most ``max_running`` at once and/or ``max_starts`` starts ``per`` period, by key.

    ``key(data)`` picks the key from the saga's data (the customer, the LLM
    provider); every saga whose step names the same ``name`` and key shares
    the slots, whatever its type.  Work over the limit waits in FIFO order,
    durably (``StepQueued`` in the journal, ``queued`` in the status), and
    runs as soon as a slot (and the rate window) allows.
    """

    name: str
    key: Callable[[D], str]
    max_running: int | None = None
    max_starts: int | None = None
    per: timedelta | None = None

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name:
            raise SagaDefinitionError(f"limit name {self.name!r} must be non-empty, without ':'")
        if self.max_running is None and self.max_starts is None:
            raise SagaDefinitionError(f"limit {self.name!r}: set max_running and/or max_starts")
        for what, value in (("max_running", self.max_running), ("max_starts", self.max_starts)):
            if value is not None and (isinstance(value, bool) or value < 1):
                raise SagaDefinitionError(f"limit {self.name!r}: {what} must be at least 1")
        if (self.max_starts is None) != (self.per is None):
            raise SagaDefinitionError(f"limit {self.name!r}: max_starts and per go together")
        if self.per is not None and self.per <= timedelta(0):
            raise SagaDefinitionError(f"limit {self.name!r}: per must be positive")

    @property
    def per_ms(self) -> int | None:
        return None if self.per is None else int(self.per.total_seconds() * 1000)

    def key_of(self, data: Any) -> str:
        """The key of ``data`` (a non-empty string, else a definition error)."""
        key = self.key(data)
        if not isinstance(key, str) or not key:
            raise SagaDefinitionError(f"limit {self.name!r}: key must return a non-empty str")
        return key
