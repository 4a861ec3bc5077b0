"""Errors raised by the worker runtime, the inbox/outbox store and the relay."""

from __future__ import annotations

from sagaline.orchestrator.core.errors import SagalineError

__all__ = [
    "DatabaseUnavailable",
    "HandlerNotFound",
    "MigrationError",
    "NoDatabaseInStep",
    "PayloadNotFound",
    "SchemaTooNew",
    "StepTimeout",
    "WorkerError",
]


class WorkerError(SagalineError):
    """Base of the errors raised by ``consumers``."""


class DatabaseUnavailable(WorkerError):
    """PostgreSQL cannot be reached (the message names host and port, never the password)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"PostgreSQL at {where} is unavailable: {reason}")
        self.where = where
        self.reason = reason


class MigrationError(WorkerError):
    """A worker-table migration could not be applied."""


class SchemaTooNew(MigrationError):
    """The database holds a worker schema version newer than this code knows."""

    def __init__(self, schema: str, found: int, known: int) -> None:
        super().__init__(
            f"schema {schema!r} is at worker-table version {found}, but this sagaline only "
            f"knows versions up to {known}; upgrade sagaline before starting this process"
        )
        self.schema = schema
        self.found = found
        self.known = known


class HandlerNotFound(WorkerError):
    """No step or compensation function is registered for a task."""


class PayloadNotFound(WorkerError):
    """A payload reference points at bytes the payload store does not hold."""


class NoDatabaseInStep(WorkerError):
    """A step running on the Kafka-only path asked for ``ctx.db``."""


class StepTimeout(WorkerError):
    """A step ran past its deadline (reported as a retryable failure, its writes rolled back)."""
