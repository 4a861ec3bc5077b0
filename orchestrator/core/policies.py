"""Value objects of a saga definition: retry policy and budgets.

Everything here is pure and deterministic: the retry delay's jitter comes
from a hash of the saga id, step and attempt, never from ``random``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sagaline.orchestrator.core.errors import SagaDefinitionError

__all__ = ["NO_RETRY", "Budget", "Retry", "deterministic_fraction"]


def deterministic_fraction(*parts: object) -> float:
    """A number in ``[0, 1)`` derived from ``parts`` by SHA-256 (stable across processes)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, kw_only=True)
class Retry:
    """Exponential backoff with deterministic jitter.

    Attempt ``n`` (1-based) that fails is retried after
    ``min(initial * backoff**(n-1), max_interval)``, scaled by a jitter
    factor in ``[1 - jitter, 1 + jitter]``.  ``max_attempts=None`` retries
    forever.  ``non_retryable`` exception types are reported by the worker as
    terminal failures.
    """

    max_attempts: int | None = 3
    initial: timedelta = timedelta(seconds=1)
    backoff: float = 2.0
    max_interval: timedelta = timedelta(minutes=5)
    jitter: float = 0.1
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise SagaDefinitionError("Retry.max_attempts must be at least 1 (or None)")
        if self.backoff < 1.0:
            raise SagaDefinitionError("Retry.backoff must be >= 1.0")
        if not 0.0 <= self.jitter < 1.0:
            raise SagaDefinitionError("Retry.jitter must be in [0, 1)")
        if self.initial <= timedelta(0) or self.max_interval < self.initial:
            raise SagaDefinitionError("Retry needs 0 < initial <= max_interval")

    def allows(self, attempt: int) -> bool:
        """Whether attempt ``attempt`` failing may be followed by another attempt."""
        return self.max_attempts is None or attempt < self.max_attempts

    def delay(self, attempt: int, *seed: object) -> timedelta:
        """The wait after failed attempt ``attempt``; ``seed`` makes the jitter deterministic."""
        base = self.initial.total_seconds() * self.backoff ** max(0, attempt - 1)
        base = min(base, self.max_interval.total_seconds())
        factor = 1.0 + self.jitter * (2.0 * deterministic_fraction(*seed, attempt) - 1.0)
        return timedelta(milliseconds=max(1, round(base * factor * 1000)))


NO_RETRY = Retry(max_attempts=1)


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Limits per saga; exceeding one pauses the saga for a person (``BudgetExceeded``)."""

    max_retries: int | None = None
    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost_micros: int | None = None

    def limits(self) -> dict[str, int]:
        """The limits that are set, by kind: retries, llm_calls, tokens, cost_micros."""
        pairs = {
            "retries": self.max_retries,
            "llm_calls": self.max_llm_calls,
            "tokens": self.max_tokens,
            "cost_micros": self.max_cost_micros,
        }
        return {k: v for k, v in pairs.items() if v is not None}
