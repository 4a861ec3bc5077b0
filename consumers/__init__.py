"""sagaline workers: run saga steps exactly once.

* :class:`Worker` consumes tasks and runs step / compensation functions with
  a :class:`WorkerStepContext`; replies go through the Postgres outbox
  (inbox row + step writes + outbox row in one transaction) or, for steps
  without database effects, in a Kafka transaction with the task offset.
* :class:`Relay` publishes the outbox to Kafka.
* :func:`migrate` creates the worker tables; :class:`PostgresPayloadStore`
  keeps large payloads.
"""

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
