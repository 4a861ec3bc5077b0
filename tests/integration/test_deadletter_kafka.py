"""Dead-lettering on real Kafka: a consumer reading a topic that holds garbage
among valid records sends each bad message, with its reason, to the dead-letter
topic and keeps consuming the valid ones (no crash, no stalled partition)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer

from sagaline.orchestrator.runtime.kafka_config import client_producer_config, group_consumer_config
from sagaline.schemas.base import Envelope, Payload
from sagaline.schemas.codec import decode, encode
from sagaline.schemas.deadletter import DeadLetter, dead_letter_for
from sagaline.schemas.errors import MessageError
from sagaline.schemas.replies import REPLY_TYPES, StepSucceeded
from sagaline.schemas.timers import TimerFired

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


def reply(saga: str, n: int) -> StepSucceeded:
    return StepSucceeded(
        envelope=Envelope(message_id=f"{saga}-{n}", saga_id=saga, saga_type="t", occurred_at=WHEN),
        step=f"step{n}",
        attempt=1,
        idempotency_key=f"{saga}:step{n}",
        task_id=f"task-{n}",
        result=Payload(type_name="r", data=b'{"n": %d}' % n),
    )


def consume_all(
    bootstrap: str, topic: str, group: str, partitions: int, handle: Callable[[Message], None]
) -> None:
    """Poll ``topic`` from the start until every partition reports EOF."""
    consumer = Consumer(
        group_consumer_config(
            bootstrap,
            group,
            extra={"isolation.level": "read_uncommitted", "enable.partition.eof": True},
        )
    )
    consumer.subscribe([topic])
    at_end: set[int] = set()
    deadline = time.monotonic() + 45
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"{topic}: did not reach the end in 45 s"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                at_end.add(msg.partition() or 0)
                continue
            at_end.discard(msg.partition() or 0)
            handle(msg)
            consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()


def test_garbage_is_dead_lettered_and_valid_messages_flow(
    kafka_bootstrap: str, topic_prefix: str, create_topics: Callable[..., list[str]]
) -> None:
    replies, dlq = f"{topic_prefix}.replies", f"{topic_prefix}.deadletter"
    create_topics(replies, partitions=2)
    create_topics(dlq)
    producer = Producer(client_producer_config(kafka_bootstrap))

    valid = [reply("saga-a", n) for n in range(5)] + [reply("saga-b", n) for n in range(5)]
    good_bytes = encode(valid[0])
    bad: dict[str, tuple[bytes | None, str]] = {
        # label: (value, expected error code)
        "garbage": (b"\x17not avro at all\xff", "bad_header"),
        "truncated": (good_bytes[: len(good_bytes) // 2], "truncated"),
        "unknown": (b"\xc3\x01" + b"\x42" * 8 + good_bytes[10:], "unknown_schema"),
        # every byte after the header 0xff: the first varint never ends within the
        # 10 bytes a long may take, which is an invalid record, not a short one
        "flipped": (good_bytes[:10] + b"\xff" * (len(good_bytes) - 10), "invalid_record"),
        "wrong-type": (
            encode(
                TimerFired(envelope=valid[0].envelope, timer_id="t1", kind="retry", due_at=WHEN)
            ),
            "unexpected_type",
        ),
        "empty": (b"", "truncated"),
        "tombstone": (None, "truncated"),
    }
    # interleave: each saga's partition gets bad messages between valid ones
    sent: list[tuple[str, str, bytes | None]] = []
    bad_items = list(bad.items())
    for i, record in enumerate(valid):
        saga = record.envelope.saga_id
        sent.append(("valid", saga, encode(record)))
        if i < len(bad_items):
            label, (value, _) = bad_items[i]
            sent.append((label, saga, value))
    for label, saga, value in sent:
        producer.produce(
            replies, key=saga.encode(), value=value, headers=[("label", label.encode())]
        )
    assert producer.flush(30) == 0

    decoded: list[StepSucceeded] = []
    rejected: dict[str, tuple[int, int]] = {}

    def handle(msg: Message) -> None:
        try:
            record = decode(msg.value(), REPLY_TYPES)  # type: ignore[arg-type]
        except MessageError as exc:
            letter = dead_letter_for(
                msg.topic() or "",
                msg.partition() or 0,
                msg.offset() or 0,
                msg.key(),
                msg.value(),
                msg.headers(),
                exc,
                "test-consumer",
                datetime.now(UTC),
            )
            producer.produce(dlq, key=msg.key(), value=encode(letter))
            headers = dict(msg.headers() or [])
            label = headers["label"]
            assert isinstance(label, bytes)
            rejected[label.decode()] = (msg.partition() or 0, msg.offset() or 0)
            return
        assert isinstance(record, StepSucceeded)
        decoded.append(record)

    consume_all(kafka_bootstrap, replies, f"{topic_prefix}-g", 2, handle)
    assert producer.flush(30) == 0

    # every valid record was consumed, in order within its saga (partition)
    assert sorted(decoded, key=lambda r: r.envelope.message_id) == sorted(
        valid, key=lambda r: r.envelope.message_id
    )
    for saga in ("saga-a", "saga-b"):
        mine = [r for r in decoded if r.envelope.saga_id == saga]
        assert [r.step for r in mine] == [f"step{n}" for n in range(5)]
    assert set(rejected) == set(bad)

    letters: list[DeadLetter] = []
    consume_all(
        kafka_bootstrap,
        dlq,
        f"{topic_prefix}-dlq",
        1,
        lambda m: letters.append(decode(m.value(), DeadLetter)),  # type: ignore[arg-type]
    )
    assert len(letters) == len(bad)
    by_label = {letter.headers["label"].decode(): letter for letter in letters}
    for label, (value, code) in bad.items():
        letter = by_label[label]
        assert letter.error_code == code, (label, letter.reason)
        assert letter.value == value
        assert letter.source_topic == replies
        assert (letter.source_partition, letter.source_offset) == rejected[label]
        assert letter.rejected_by == "test-consumer"
        assert letter.reason
