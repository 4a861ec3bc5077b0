"""A restarted orchestrator fences its predecessor's open transaction (issue 11, goal 6).

``TransactionalProducer.init`` of a client whose predecessor (same transactional id)
left a transaction open: the coordinator aborts that transaction, the new client
takes over (asking again every 0.1 s while the abort is under way), the
predecessor can commit nothing more and what it wrote never becomes visible.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaException, Producer
from orchestrator_support import read_committed

from sagaline.orchestrator.runtime.kafka_config import transactional_producer_config
from sagaline.orchestrator.runtime.release import release
from sagaline.orchestrator.runtime.transactions import Produce, TransactionalProducer

pytestmark = pytest.mark.integration


def test_init_fences_a_predecessor_with_an_open_transaction(
    kafka_bootstrap: str, topic_prefix: str, create_topics: Callable[..., list[str]]
) -> None:
    topic = f"{topic_prefix}.state"
    create_topics(topic, partitions=1)
    config = transactional_producer_config(kafka_bootstrap, f"fence-{uuid.uuid4().hex}")
    before = Producer(config)
    before.init_transactions(30)
    before.begin_transaction()
    before.produce(topic, key=b"k", value=b"from the predecessor", partition=0)
    assert before.flush(30) == 0  # written, its transaction left open (as by a SIGKILL)

    after = TransactionalProducer(config)
    after.init(30.0)
    record = Produce(topic, b"k", b"from its successor", 0)
    assert after.commit_batch([record], [], lambda: None)

    with pytest.raises(KafkaException):
        before.commit_transaction(10)  # fenced
    values = [r.value for r in read_committed(kafka_bootstrap, topic)]
    assert values == [b"from its successor"]
    held = [before]
    del before
    release(held)
    after.flush(10)
