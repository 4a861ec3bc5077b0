"""The orchestrator's Kafka runtime: topics, the exactly-once loop, restore, timers."""

from sagaline.orchestrator.runtime.engine import EngineConfig, EngineStats, Orchestrator
from sagaline.orchestrator.runtime.errors import (
    FatalKafkaError,
    InputRejected,
    RestoreError,
    TopicConfigError,
)
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.ports import Codec, Outcome, Outgoing, SagaLogic, TimerSpec
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics, topic_specs
from sagaline.orchestrator.runtime.transactions import Produce, TransactionalProducer

__all__ = [
    "Codec",
    "EngineConfig",
    "EngineStats",
    "FatalKafkaError",
    "InputRejected",
    "Orchestrator",
    "Outcome",
    "Outgoing",
    "Produce",
    "RestoreError",
    "SagaLogic",
    "TimerSpec",
    "TopicConfigError",
    "TopicLayout",
    "TransactionalProducer",
    "ensure_topics",
    "partition_for",
    "topic_specs",
]
