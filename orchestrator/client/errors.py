"""What the client raises: every failure is an exception, never a silent drop."""

from __future__ import annotations

from sagaline.orchestrator.core.errors import OrchestratorError

__all__ = [
    "CommandRejected",
    "DeliveryFailed",
    "KafkaUnavailable",
    "SagaAlreadyStarted",
    "SagaNotFound",
    "SagaRejected",
    "UnsupportedDataModel",
    "WaitTimeout",
]


class SagaAlreadyStarted(OrchestratorError):
    """A saga with this id exists and was started with different input."""

    def __init__(self, saga_id: str, existing_sha256: str, requested_sha256: str) -> None:
        super().__init__(
            f"saga {saga_id!r} was already started with different input "
            f"(recorded input sha256 {existing_sha256[:12]}…, this start {requested_sha256[:12]}…)"
        )
        self.saga_id = saga_id
        self.existing_sha256 = existing_sha256
        self.requested_sha256 = requested_sha256


class SagaNotFound(OrchestratorError):
    """No snapshot of this saga exists on the state topic."""


class WaitTimeout(OrchestratorError):
    """The saga did not reach the awaited status (or no verdict came) in time."""


class KafkaUnavailable(OrchestratorError):
    """Kafka did not answer (or the topics are missing) before anything was written.

    The message always ends with "nothing was sent": the command was never
    handed to the broker, so it is safe to run it again.
    """


class DeliveryFailed(OrchestratorError):
    """Kafka took the connection but did not confirm the write in time.

    The command may or may not have been written; commands are idempotent by
    saga id (starts) or harmless to repeat (signals are ignored once the wait
    is closed), so sending it again is safe.
    """


class UnsupportedDataModel(OrchestratorError):
    """The data model cannot be decoded by the orchestrator (refused before sending)."""


class SagaRejected(OrchestratorError):
    """The orchestrator refused the saga's start: it was dead-lettered with ``reason``."""

    def __init__(self, saga_id: str, error_type: str, reason: str) -> None:
        super().__init__(f"the orchestrator rejected saga {saga_id!r}: {error_type}: {reason}")
        self.saga_id = saga_id
        self.error_type = error_type
        self.reason = reason


class CommandRejected(OrchestratorError):
    """The orchestrator dead-lettered a command (unknown saga, undecodable, ...)."""
