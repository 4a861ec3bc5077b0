"""sagaline workers: run saga steps exactly once.

* :class:`Worker` consumes tasks and runs step / compensation functions with
  a :class:`WorkerStepContext`; replies go through the Postgres outbox
  (inbox row + step writes + outbox row in one transaction) or, for steps
  without database effects, in a Kafka transaction with the task offset.
* :class:`Relay` publishes the outbox to Kafka.
* :func:`migrate` creates the worker tables; :class:`PostgresPayloadStore`
  keeps large payloads.
"""

from consumers.context import WorkerStepContext
from consumers.errors import (
    DatabaseUnavailable,
    HandlerNotFound,
    MigrationError,
    NoDatabaseInStep,
    PayloadNotFound,
    SchemaTooNew,
    StepTimeout,
    WorkerError,
)
from consumers.handlers import Handler, HandlerResolver, RegistryResolver, StepTable
from consumers.migrations import LATEST_VERSION, MigrationResult, migrate
from consumers.payload_store import PostgresPayloadStore
from consumers.relay import Relay, RelayOptions, RelayStats
from consumers.worker import TaskTrace, Worker, WorkerOptions, WorkerStats

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
