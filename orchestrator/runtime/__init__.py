"""The orchestrator's Kafka runtime: topics, the exactly-once loop, restore, timers."""

from orchestrator.runtime.engine import EngineConfig, EngineStats, Orchestrator
from orchestrator.runtime.errors import (
    FatalKafkaError,
    InputRejected,
    RestoreError,
    TopicConfigError,
)
from orchestrator.runtime.partitioner import partition_for
from orchestrator.runtime.ports import Codec, Outcome, Outgoing, SagaLogic, TimerSpec
from orchestrator.runtime.topics import TopicLayout, ensure_topics, topic_specs
from orchestrator.runtime.transactions import Produce, TransactionalProducer

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
