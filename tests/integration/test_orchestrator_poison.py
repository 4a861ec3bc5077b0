"""Issue 17: one bad message or a routine operation never stops an orchestrator partition.

* an oversized record (about 1 MB, and a zstd-compressed one far larger
  uncompressed) on commands or replies is dead-lettered with a bounded letter
  (truncated value + its length and SHA-256) and the partition keeps flowing;
* an input written to a partition its key does not hash to is dead-lettered
  (``WrongPartition``), never started under the partition it arrived on;
* a partition count that changes while running stops the orchestrator with a
  clear error, and so does a restart on a grown layout holding sagas.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]
from orchestrator_chain import JsonCodec, start_command
from orchestrator_support import Responder, delete_prefix_topics, fresh_prefix, read_committed
from test_orchestrator_runtime import (
    Running,
    latest_states,
    make_orchestrator,
    send_starts,
    wait_terminal,
)

from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.kafka_config import admin_config, client_producer_config
from sagaline.orchestrator.runtime.layout import PartitionCountChanged
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.deadletter import MAX_ORIGINAL_VALUE_BYTES, DeadLetter

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
def prefix(kafka_bootstrap: str) -> Iterator[str]:
    p = fresh_prefix("poison")
    ensure_topics(kafka_bootstrap, TopicNames(p), TopicLayout(partitions=PARTITIONS))
    yield p
    delete_prefix_topics(kafka_bootstrap, p)


def ids_on(partition: int, count: int, tag: str) -> list[str]:
    """``count`` saga ids whose key hashes to ``partition``."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        candidate = f"{tag}-{i}"
        if partition_for(candidate, PARTITIONS) == partition:
            out.append(candidate)
        i += 1
    return out


def dead_letters(bootstrap: str, prefix: str, codec: JsonCodec) -> list[DeadLetter]:
    letters = []
    for rec in read_committed(bootstrap, f"{prefix}.deadletter"):
        assert rec.value is not None
        letter = codec.decode(rec.value, (DeadLetter,))
        assert isinstance(letter, DeadLetter)
        letters.append(letter)
    return letters


def test_oversized_inputs_are_dead_lettered_and_their_partition_keeps_flowing(
    kafka_bootstrap: str, prefix: str
) -> None:
    codec = JsonCodec()
    # what a default client may write (text: the test's JSON codec keeps bytes as UTF-8)
    # (less room for the two signature headers)
    plain = base64.b64encode(os.urandom(750_000))[:999_700]
    # 5 MB that compresses to almost nothing: the broker accepts it, the consumer gets 5 MB
    compressible = b"sagaline" * 655_360
    plain_p = partition_for("big-plain", PARTITIONS)
    # signed (as a worker and a client), so that each is refused for its size, not as Unsigned
    big_client = SignedProducer(
        client_producer_config(
            kafka_bootstrap, extra={"compression.type": "zstd", "message.max.bytes": 8_000_000}
        ),
        "worker",
    )
    small_client = SignedProducer(client_producer_config(kafka_bootstrap), "client")
    responder = Responder(kafka_bootstrap, prefix, codec).start()
    try:
        with Running(make_orchestrator(kafka_bootstrap, prefix, "a")) as run:
            small_client.produce(f"{prefix}.commands", key="big-plain", value=plain)
            assert small_client.flush(30) == 0
            big_client.produce(f"{prefix}.replies", key="big-plain", value=compressible)
            assert big_client.flush(30) == 0
            after = ids_on(plain_p, 4, "after")
            send_starts(kafka_bootstrap, prefix, codec, after)
            states = wait_terminal(kafka_bootstrap, prefix, codec, after, timeout=60)
            assert run.error is None
    finally:
        responder.stop()
    assert run.error is None, run.error
    assert {states[i].status for i in after} == {"completed"}
    letters = {
        letter.source_topic: letter for letter in dead_letters(kafka_bootstrap, prefix, codec)
    }
    assert set(letters) == {f"{prefix}.commands", f"{prefix}.replies"}
    for original, letter in (
        (plain, letters[f"{prefix}.commands"]),
        (compressible, letters[f"{prefix}.replies"]),
    ):
        assert letter.truncated
        assert letter.value == original[:MAX_ORIGINAL_VALUE_BYTES]
        assert letter.value_length == len(original)
        assert letter.value_sha256 == hashlib.sha256(original).hexdigest()
        assert letter.source_partition == plain_p and letter.source_offset >= 0
        assert letter.reason


def test_start_on_the_wrong_partition_is_dead_lettered(kafka_bootstrap: str, prefix: str) -> None:
    codec = JsonCodec()
    saga_id = "misrouted-1"
    right = partition_for(saga_id, PARTITIONS)
    wrong = (right + 1) % PARTITIONS
    producer = SignedProducer(client_producer_config(kafka_bootstrap), "client")
    responder = Responder(kafka_bootstrap, prefix, codec).start()
    try:
        with Running(make_orchestrator(kafka_bootstrap, prefix, "a")) as run:
            start = start_command(saga_id, when=datetime.now(UTC))
            producer.produce(
                f"{prefix}.commands", key=saga_id, value=codec.encode(start), partition=wrong
            )
            assert producer.flush(10) == 0
            # a saga sent afterwards on that partition proves the misrouted one was decided
            later = ids_on(wrong, 1, "later")
            send_starts(kafka_bootstrap, prefix, codec, later)
            wait_terminal(kafka_bootstrap, prefix, codec, later, timeout=60)
            assert run.error is None
    finally:
        responder.stop()
    assert saga_id not in latest_states(kafka_bootstrap, prefix, codec)
    letters = [
        letter
        for letter in dead_letters(kafka_bootstrap, prefix, codec)
        if letter.key == saga_id.encode()
    ]
    assert len(letters) == 1
    assert letters[0].error_type == "WrongPartition"
    assert letters[0].source_partition == wrong
    assert f"belongs to partition {right}" in letters[0].reason


def test_partition_count_change_while_running_stops_the_orchestrator(
    kafka_bootstrap: str, prefix: str
) -> None:
    orch = make_orchestrator(kafka_bootstrap, prefix, "a", partition_check_s=0.5)
    admin = AdminClient(admin_config(kafka_bootstrap))
    with Running(orch, raise_errors=False) as run:
        deadline = threading.Event()
        deadline.wait(2.0)  # let it start and join the group
        assert run.thread.is_alive() and run.error is None
        futures = admin.create_partitions([NewPartitions(f"{prefix}.commands", PARTITIONS + 1)])
        for future in futures.values():
            future.result(30)
        run.thread.join(30)
        assert not run.thread.is_alive()
    assert isinstance(run.error, PartitionCountChanged), run.error
    assert f"started with {PARTITIONS}" in str(run.error)
    assert f"{prefix}.commands={PARTITIONS + 1}" in str(run.error)


def test_restart_on_a_grown_layout_holding_sagas_is_refused(
    kafka_bootstrap: str, prefix: str
) -> None:
    codec = JsonCodec()
    ids = [f"grow-{i}" for i in range(12)]
    assert any(partition_for(i, PARTITIONS) != partition_for(i, PARTITIONS + 1) for i in ids)
    responder = Responder(kafka_bootstrap, prefix, codec).start()
    try:
        with Running(make_orchestrator(kafka_bootstrap, prefix, "a")) as run:
            send_starts(kafka_bootstrap, prefix, codec, ids)
            wait_terminal(kafka_bootstrap, prefix, codec, ids, timeout=60)
            assert run.error is None
    finally:
        responder.stop()
    names = TopicNames(prefix)
    admin = AdminClient(admin_config(kafka_bootstrap))
    grown = [
        NewPartitions(t, PARTITIONS + 1)
        for t in (names.commands, names.replies, names.state, names.journal)
    ]
    for future in admin.create_partitions(grown).values():
        future.result(30)
    with Running(make_orchestrator(kafka_bootstrap, prefix, "b"), raise_errors=False) as again:
        again.thread.join(60)
        assert not again.thread.is_alive()
    assert isinstance(again.error, PartitionCountChanged), again.error
    assert "the partition count changed after sagas were written" in str(again.error)


def test_an_input_whose_dead_letter_is_refused_too_is_skipped_and_the_partition_flows(
    kafka_bootstrap: str,
) -> None:
    """The fallback terminates: a dead-letter topic that refuses every letter (a 300-byte
    limit) makes the poison input's own dead letter abort too; it is then consumed
    without output instead of aborting forever."""
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    codec = JsonCodec()
    prefix = fresh_prefix("skip")
    names = TopicNames(prefix)
    admin = AdminClient(admin_config(kafka_bootstrap))
    tiny = NewTopic(names.deadletter, 1, 1, config={"max.message.bytes": "300"})
    admin.create_topics([tiny])[names.deadletter].result(30)
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=PARTITIONS))
    producer = SignedProducer(client_producer_config(kafka_bootstrap), "client")
    responder = Responder(kafka_bootstrap, prefix, codec).start()
    try:
        orch = make_orchestrator(kafka_bootstrap, prefix, "a")
        with Running(orch) as run:
            producer.produce(f"{prefix}.commands", key="garbage", value=b"x" * 2000)
            assert producer.flush(10) == 0
            after = ids_on(partition_for("garbage", PARTITIONS), 3, "behind")
            send_starts(kafka_bootstrap, prefix, codec, after)
            states = wait_terminal(kafka_bootstrap, prefix, codec, after, timeout=90)
            assert run.error is None
        assert {states[i].status for i in after} == {"completed"}
        assert orch.stats.aborted_batches >= 3  # decided, dead-lettered, then skipped
        assert read_committed(kafka_bootstrap, names.deadletter) == []
    finally:
        responder.stop()
        delete_prefix_topics(kafka_bootstrap, prefix)
