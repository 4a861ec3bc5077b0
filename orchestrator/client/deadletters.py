"""The dead-letter topic, read and re-played: ``sagaline deadletters list | replay``.

Every process that refuses a message writes a
:class:`~sagaline.schemas.deadletter.DeadLetter` to ``<prefix>.deadletter``: the
original key, value and headers, where it came from and why it was refused.
:func:`read_dead_letters` reads them (read_committed, to the end snapshot taken
at the start), filtered by saga, error type or time.  :func:`replay_dead_letter`
re-produces one original, once its cause is fixed, to its source topic: the same
key, value and headers (a signed original keeps its writer's signature, so it is
verified as what it was), to the source partition or, with ``by_key``, to the
partition sagaline's partitioner gives its key (the fix for ``WrongPartition``).
A letter whose original was cut to fit (``truncated``) is refused: the whole
value is only at its source offset.  A replay is confirmed by Kafka's delivery
report or reported as not done.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from sagaline.orchestrator.client.delivery import KAFKA_TIMEOUT_S
from sagaline.orchestrator.client.errors import DeliveryFailed, KafkaUnavailable
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.core.errors import OrchestratorError
from sagaline.orchestrator.runtime.kafka_config import client_producer_config, reader_config
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.stable_read import (
    ReadToEndError,
    read_to_end,
    stable_offsets,
)
from sagaline.schemas.codec import RecordCodec, default_codec
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.errors import SchemaError

__all__ = [
    "DeadLetterError",
    "FoundLetter",
    "Replayed",
    "find_dead_letter",
    "read_dead_letters",
    "replay_dead_letter",
]


class DeadLetterError(OrchestratorError):
    """The dead letters cannot be read, or this one cannot be replayed (the reason says)."""


@dataclass(frozen=True)
class FoundLetter:
    """One record of the dead-letter topic: the letter, or why it does not decode."""

    partition: int
    offset: int
    timestamp_ms: int
    letter: DeadLetter | None
    error: str = ""

    @property
    def saga_id(self) -> str | None:
        """The original's key as text (sagaline keys every record by its saga id)."""
        if self.letter is None or self.letter.key is None:
            return None
        return self.letter.key.decode("utf-8", "replace")

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
        }
        if self.letter is None:
            return {**found, "undecodable": self.error}
        letter = self.letter
        return {
            **found,
            "saga_id": self.saga_id,
            "error_type": letter.error_type,
            "error_code": letter.error_code,
            "reason": letter.reason,
            "rejected_by": letter.rejected_by,
            "rejected_at": letter.rejected_at.isoformat(),
            "source": f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}",
            "value_bytes": letter.value_length or len(letter.value or b""),
            "truncated": letter.truncated,
        }


@dataclass(frozen=True)
class Replayed:
    """Where Kafka stored a replayed original."""

    topic: str
    partition: int
    offset: int


def _decode(
    codec: RecordCodec, partition: int, offset: int, ts: int, value: bytes | None
) -> FoundLetter:
    if value is None:
        return FoundLetter(partition, offset, ts, None, "an empty record")
    try:
        letter = codec.decode(value, (DeadLetter,))
    except SchemaError as exc:
        return FoundLetter(partition, offset, ts, None, f"{type(exc).__name__}: {exc}")
    if not isinstance(letter, DeadLetter):
        return FoundLetter(partition, offset, ts, None, f"a {type(letter).__name__}")
    return FoundLetter(partition, offset, ts, letter)


def read_dead_letters(
    bootstrap_servers: str,
    names: TopicNames,
    *,
    saga_id: str | None = None,
    error_type: str | None = None,
    since: datetime | None = None,
    codec: RecordCodec | None = None,
    timeout: float = 60.0,
) -> list[FoundLetter]:
    """The dead letters (oldest first), filtered by original key, error type and time
    (``since``: rejected at or after it).  Undecodable records are kept unless filtered."""
    codec = codec or default_codec()
    topic = names.deadletter
    reader = Consumer(reader_config(bootstrap_servers, f"sagaline-deadletters-{uuid.uuid4().hex}"))
    try:
        partitions = _partitions(reader, topic, bootstrap_servers)
        ranges = stable_offsets(reader, topic, partitions, timeout=min(timeout, 10.0))
        found = [
            _decode(codec, r.partition, r.offset, r.timestamp_ms, r.value)
            for r in read_to_end(reader, topic, ranges, timeout=timeout)
        ]
    except (ReadToEndError, KafkaException) as exc:
        raise DeadLetterError(f"cannot read {topic}: {exc}") from exc
    finally:
        reader.close()
    filtered = saga_id is not None or error_type is not None or since is not None
    return [
        f
        for f in sorted(found, key=lambda f: (f.timestamp_ms, f.partition, f.offset))
        if not filtered
        or (
            f.letter is not None
            and (saga_id is None or f.saga_id == saga_id)
            and (error_type is None or f.letter.error_type == error_type)
            and (since is None or f.letter.rejected_at >= since)
        )
    ]


def _partitions(reader: Consumer, topic: str, bootstrap_servers: str) -> list[int]:
    try:
        metadata = reader.list_topics(topic, timeout=KAFKA_TIMEOUT_S)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"Kafka at {bootstrap_servers} did not answer within {KAFKA_TIMEOUT_S:g} s: {exc}"
        ) from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise DeadLetterError(f"topic {topic!r} does not exist (wrong --prefix?)")
    return sorted(described.partitions)


def find_dead_letter(
    bootstrap_servers: str, names: TopicNames, offset: int, partition: int = 0
) -> DeadLetter:
    """The dead letter at ``offset`` (:class:`DeadLetterError` when there is none)."""
    for found in read_dead_letters(bootstrap_servers, names):
        if (found.partition, found.offset) == (partition, offset):
            if found.letter is None:
                raise DeadLetterError(
                    f"{names.deadletter}[{partition}]@{offset} is not a dead letter: {found.error}"
                )
            return found.letter
    raise DeadLetterError(f"no dead letter at {names.deadletter}[{partition}]@{offset}")


def replay_dead_letter(
    bootstrap_servers: str, letter: DeadLetter, *, by_key: bool = False
) -> Replayed:
    """Re-produce ``letter``'s original to its source topic; confirmed or raised."""
    if letter.source_offset < 0 or "#" in letter.source_topic:
        raise DeadLetterError(
            f"this dead letter holds an input the orchestrator made itself ({letter.source_topic}:"
            " a due timer or a local step's reply), not a record of a topic: not replayable"
        )
    if letter.truncated:
        whole = (
            f"{letter.value_length} bytes, sha256 {letter.value_sha256}"
            if letter.value_length is not None
            else "its key or headers were cut to fit"
        )
        raise DeadLetterError(
            f"this dead letter holds only part of its original ({whole}); the whole record "
            f"is at {letter.source_topic}[{letter.source_partition}]@{letter.source_offset}, "
            "not replayable from here"
        )
    if letter.value is None:
        raise DeadLetterError("the original had no value: there is nothing to replay")
    # never auto-create a source topic that is gone: the replay must find what it left
    config = client_producer_config(bootstrap_servers, extra={"allow.auto.create.topics": False})
    producer = Producer(config)
    try:
        partition = _target_partition(producer, letter, by_key)
        done = threading.Event()
        outcome: list[Message | KafkaError] = []

        def report(err: KafkaError | None, msg: Message) -> None:
            outcome.append(err if err is not None else msg)
            done.set()

        producer.produce(
            letter.source_topic,
            key=letter.key,
            value=letter.value,
            headers=list(letter.headers.items()),
            partition=partition,
            on_delivery=report,
        )
        producer.flush(KAFKA_TIMEOUT_S)
        if not done.is_set():
            producer.purge()
            raise DeliveryFailed(
                f"Kafka did not confirm the replay to {letter.source_topic} within "
                f"{KAFKA_TIMEOUT_S:g} s: it may or may not have been written"
            )
        result = outcome[0]
        if isinstance(result, KafkaError):
            raise DeliveryFailed(f"Kafka refused the replay to {letter.source_topic}: {result}")
        return Replayed(letter.source_topic, result.partition() or 0, result.offset() or 0)
    except KafkaException as exc:
        raise KafkaUnavailable(f"replay to {letter.source_topic} not sent: {exc}") from exc
    finally:
        producer.flush(0)


def _target_partition(producer: Producer, letter: DeadLetter, by_key: bool) -> int:
    """The source partition (checked to exist), or with ``by_key`` the key's partition."""
    if by_key and letter.key is None:
        raise DeadLetterError("the original has no key: --by-key has nothing to go by")
    try:
        metadata = producer.list_topics(letter.source_topic, timeout=KAFKA_TIMEOUT_S)
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka did not answer: {exc}; nothing was sent") from exc
    described = metadata.topics.get(letter.source_topic)
    if described is None or described.error is not None or not described.partitions:
        raise DeadLetterError(f"topic {letter.source_topic!r} does not exist; nothing was sent")
    count = len(described.partitions)
    if by_key and letter.key is not None:
        return partition_for(letter.key, count)
    if letter.source_partition >= count:
        raise DeadLetterError(
            f"{letter.source_topic} has {count} partition(s), not partition "
            f"{letter.source_partition} (--by-key sends it where its key goes); nothing was sent"
        )
    return letter.source_partition
