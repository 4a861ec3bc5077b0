"""Restore waits for a transaction still open at the end of a state partition (issue 17).

The storm suite found sagas dead-lettered as ``UnknownSaga`` right after the fleet
started: a new owner's committed offsets become stable when the previous owner's
commit marker reaches ``__consumer_offsets``, possibly before the marker reaches the
state partition.  Until it does, that transaction's snapshots lie beyond the last
stable offset, and a restore that stopped there missed the sagas whose ``StartSaga``
the committed offsets had already consumed.

Here a transactional producer leaves a snapshot in an open transaction (as the
marker in flight does) and resolves it two seconds after the restore began: the
restore must wait and return what the transaction decided.  (Before the fix it
returned at once, without the committed snapshot.)
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer

from sagaline.orchestrator.runtime.kafka_config import reader_config, transactional_producer_config
from sagaline.orchestrator.runtime.restore import read_partition_latest
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer

pytestmark = pytest.mark.integration


def _open_transaction(bootstrap: str, topic: str) -> SignedProducer:
    """One committed snapshot (``before``), then ``late`` written in a transaction left open."""
    config = transactional_producer_config(bootstrap, f"restore-{uuid.uuid4().hex}")
    producer = SignedProducer(config, "orchestrator")  # state records: the orchestrator's
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"before", value=b"1", partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"late", value=b"2", partition=0)
    assert producer.flush(30) == 0
    return producer


@pytest.mark.parametrize("outcome", ["commit", "abort"])
def test_restore_waits_for_the_open_transaction_at_the_end(
    kafka_bootstrap: str,
    topic_prefix: str,
    create_topics: Callable[..., list[str]],
    outcome: str,
) -> None:
    topic = f"{topic_prefix}.state"
    create_topics(topic, partitions=2)  # partition 1 stays empty
    producer = _open_transaction(kafka_bootstrap, topic)
    resolve = producer.commit_transaction if outcome == "commit" else producer.abort_transaction
    resolved = threading.Event()

    def later() -> None:
        resolve(30)
        resolved.set()

    timer = threading.Timer(2.0, later)
    timer.start()
    reader = Consumer(reader_config(kafka_bootstrap, f"{topic_prefix}-restore"))
    try:
        values, ends, count = read_partition_latest(reader, topic, [0, 1], timeout=60)
        # the read ended only once the transaction was resolved, and saw what it decided
        assert resolved.is_set()
        assert values[1] == {}
        if outcome == "commit":
            assert values[0] == {"before": b"1", "late": b"2"}
            assert count == 2
        else:
            assert values[0] == {"before": b"1"}
            assert count == 1
        assert ends[0] >= 4  # two records and two markers
    finally:
        timer.join()
        reader.close()
