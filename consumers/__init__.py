"""sagaline workers: run saga steps exactly once.

* :class:`Worker` consumes tasks and runs step / compensation functions with
  a :class:`WorkerStepContext`; replies go through the Postgres outbox
  (inbox row + step writes + outbox row in one transaction) or, for steps
  without database effects, in a Kafka transaction with the task offset.
* :class:`Relay` publishes the outbox to Kafka.
* :func:`migrate` creates the worker tables; :class:`PostgresPayloadStore`
  keeps large payloads.


The names are imported on first use (PEP 562), so importing one submodule of
this package does not import them all; type checkers see them through the
``TYPE_CHECKING`` imports.
"""

from typing import TYPE_CHECKING

from sagaline._lazy import LazyExports

if TYPE_CHECKING:
    from sagaline.consumers.context import WorkerStepContext
    from sagaline.consumers.errors import (
        DatabaseUnavailable,
        HandlerNotFound,
        MigrationError,
        NoDatabaseInStep,
        PayloadNotFound,
        SchemaTooNew,
        StepTimeout,
        WorkerError,
    )
    from sagaline.consumers.handlers import Handler, HandlerResolver, RegistryResolver, StepTable
    from sagaline.consumers.migrations import LATEST_VERSION, MigrationResult, migrate
    from sagaline.consumers.payload_store import PostgresPayloadStore
    from sagaline.consumers.relay import Relay, RelayOptions, RelayStats
    from sagaline.consumers.worker import TaskTrace, Worker, WorkerOptions, WorkerStats

__all__ = [
    "LATEST_VERSION",
    "DatabaseUnavailable",
    "Handler",
    "HandlerNotFound",
    "HandlerResolver",
    "MigrationError",
    "MigrationResult",
    "NoDatabaseInStep",
    "PayloadNotFound",
    "PostgresPayloadStore",
    "RegistryResolver",
    "Relay",
    "RelayOptions",
    "RelayStats",
    "SchemaTooNew",
    "StepTable",
    "StepTimeout",
    "TaskTrace",
    "Worker",
    "WorkerError",
    "WorkerOptions",
    "WorkerStats",
    "WorkerStepContext",
    "migrate",
]

_HOME_OF = {
    "WorkerStepContext": "sagaline.consumers.context",
    "DatabaseUnavailable": "sagaline.consumers.errors",
    "HandlerNotFound": "sagaline.consumers.errors",
    "MigrationError": "sagaline.consumers.errors",
    "NoDatabaseInStep": "sagaline.consumers.errors",
    "PayloadNotFound": "sagaline.consumers.errors",
    "SchemaTooNew": "sagaline.consumers.errors",
    "StepTimeout": "sagaline.consumers.errors",
    "WorkerError": "sagaline.consumers.errors",
    "Handler": "sagaline.consumers.handlers",
    "HandlerResolver": "sagaline.consumers.handlers",
    "RegistryResolver": "sagaline.consumers.handlers",
    "StepTable": "sagaline.consumers.handlers",
    "LATEST_VERSION": "sagaline.consumers.migrations",
    "MigrationResult": "sagaline.consumers.migrations",
    "migrate": "sagaline.consumers.migrations",
    "PostgresPayloadStore": "sagaline.consumers.payload_store",
    "Relay": "sagaline.consumers.relay",
    "RelayOptions": "sagaline.consumers.relay",
    "RelayStats": "sagaline.consumers.relay",
    "TaskTrace": "sagaline.consumers.worker",
    "Worker": "sagaline.consumers.worker",
    "WorkerOptions": "sagaline.consumers.worker",
    "WorkerStats": "sagaline.consumers.worker",
}


if not TYPE_CHECKING:  # a type checker sees the names above, and flags any other
    _EXPORTS = LazyExports(globals(), _HOME_OF)
    __getattr__ = _EXPORTS.attribute
    __dir__ = _EXPORTS.names
