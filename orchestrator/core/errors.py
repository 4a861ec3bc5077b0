"""The sagaline exception hierarchy: everything derives from ``SagalineError``."""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "ConfigError",
    "JournalError",
    "OrchestratorError",
    "RetryableError",
    "RoutingError",
    "SagaDefinitionError",
    "SagalineError",
    "StepError",
    "TerminalError",
    "TestKitError",
    "UnknownSagaType",
]


class SagalineError(Exception):
    """Base of every error sagaline raises on purpose."""


class OrchestratorError(SagalineError):
    """Base of the orchestrator's errors."""


class ConfigError(SagalineError):
    """Settings are missing or inconsistent."""


class SagaDefinitionError(OrchestratorError):
    """A saga class is not a valid definition (raised when the class is created)."""


class RoutingError(SagaDefinitionError):
    """A routing hook returned a target it did not declare."""


class UnknownSagaType(OrchestratorError):
    """No registered definition has this saga type name (and version)."""


class JournalError(OrchestratorError):
    """A journal entry cannot be built (for example the input has no saga state)."""


class TestKitError(OrchestratorError, AssertionError):
    """An expectation of :class:`sagaline.orchestrator.core.testing.SagaTestKit` did not hold."""

    __test__ = False  # not a pytest test class


class StepError(SagalineError):
    """Base of the errors step code raises to tell the worker how to report a failure."""


class RetryableError(StepError):
    """The step failed but may succeed when retried under the step's retry policy.

    ``retry_after`` is a hint for the worker; the decider schedules the retry
    from the step's :class:`~sagaline.orchestrator.core.policies.Retry` policy.
    """

    def __init__(self, message: str = "", *, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TerminalError(StepError):
    """The step failed for good: it is not retried (the saga compensates)."""
