"""The orchestrator's Kafka runtime: topics, the exactly-once loop, restore, timers.

The names are imported on first use (PEP 562), so importing one submodule of
this package does not import them all; type checkers see them through the
``TYPE_CHECKING`` imports.
"""

from typing import TYPE_CHECKING

from sagaline._lazy import LazyExports

if TYPE_CHECKING:
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

_HOME_OF = {
    "EngineConfig": "sagaline.orchestrator.runtime.engine",
    "EngineStats": "sagaline.orchestrator.runtime.engine",
    "Orchestrator": "sagaline.orchestrator.runtime.engine",
    "FatalKafkaError": "sagaline.orchestrator.runtime.errors",
    "InputRejected": "sagaline.orchestrator.runtime.errors",
    "RestoreError": "sagaline.orchestrator.runtime.errors",
    "TopicConfigError": "sagaline.orchestrator.runtime.errors",
    "partition_for": "sagaline.orchestrator.runtime.partitioner",
    "Codec": "sagaline.orchestrator.runtime.ports",
    "Outcome": "sagaline.orchestrator.runtime.ports",
    "Outgoing": "sagaline.orchestrator.runtime.ports",
    "SagaLogic": "sagaline.orchestrator.runtime.ports",
    "TimerSpec": "sagaline.orchestrator.runtime.ports",
    "TopicLayout": "sagaline.orchestrator.runtime.topics",
    "ensure_topics": "sagaline.orchestrator.runtime.topics",
    "topic_specs": "sagaline.orchestrator.runtime.topics",
    "Produce": "sagaline.orchestrator.runtime.transactions",
    "TransactionalProducer": "sagaline.orchestrator.runtime.transactions",
}


if not TYPE_CHECKING:  # a type checker sees the names above, and flags any other
    _EXPORTS = LazyExports(globals(), _HOME_OF)
    __getattr__ = _EXPORTS.attribute
    __dir__ = _EXPORTS.names
