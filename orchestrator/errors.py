"""The sagaline exception hierarchy: everything derives from ``SagalineError``."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "OrchestratorError",
    "SagaDefinitionError",
    "SagalineError",
]


class SagalineError(Exception):
    """Base of every error sagaline raises on purpose."""


class OrchestratorError(SagalineError):
    """Base of the orchestrator's errors."""


class ConfigError(SagalineError):
    """Settings are missing or inconsistent."""


class SagaDefinitionError(OrchestratorError):
    """A saga class is not a valid definition (raised when the class is created)."""
