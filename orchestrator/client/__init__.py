"""The Python client: ``SagaClient`` starts sagas, signals and steers them, reads their status.

See :mod:`sagaline.orchestrator.client.saga_client` for the client,
:mod:`~sagaline.orchestrator.client.delivery` for the delivery bounds and
:mod:`~sagaline.orchestrator.client.verdicts` for the orchestrator's verdicts.
"""

from sagaline.orchestrator.client.delivery import KAFKA_TIMEOUT_S, Receipt
from sagaline.orchestrator.client.errors import (
    CommandRejected,
    DeliveryFailed,
    KafkaUnavailable,
    SagaAlreadyStarted,
    SagaNotFound,
    SagaRejected,
    UnsupportedDataModel,
    WaitTimeout,
)
from sagaline.orchestrator.client.saga_client import SagaClient, SagaHandle
from sagaline.orchestrator.client.stream import StreamEvent
from sagaline.orchestrator.client.verdicts import Verdict

__all__ = [
    "KAFKA_TIMEOUT_S",
    "CommandRejected",
    "DeliveryFailed",
    "KafkaUnavailable",
    "Receipt",
    "SagaAlreadyStarted",
    "SagaClient",
    "SagaHandle",
    "SagaNotFound",
    "SagaRejected",
    "StreamEvent",
    "UnsupportedDataModel",
    "Verdict",
    "WaitTimeout",
]
