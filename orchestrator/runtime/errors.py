"""Errors raised by the Kafka runtime of the orchestrator."""

from __future__ import annotations

from sagaline.orchestrator.core.errors import OrchestratorError

__all__ = [
    "FatalKafkaError",
    "InputRejected",
    "RestoreError",
    "TopicConfigError",
]


class TopicConfigError(OrchestratorError):
    """The sagaline topics are missing, mis-partitioned or mis-configured."""


class FatalKafkaError(OrchestratorError):
    """The transactional producer or the consumer cannot continue; restart the process."""


class RestoreError(OrchestratorError):
    """The state topic could not be read back to its last stable offset."""


class InputRejected(OrchestratorError):
    """An input cannot be decided (unknown saga, unknown type, ...); it is dead-lettered.

    ``error_type`` is a short machine-readable reason recorded in the dead letter.
    """

    def __init__(self, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.error_type = error_type
        self.reason = reason
