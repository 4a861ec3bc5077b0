"""The storm's flood of bad input on every input topic (commands, replies, tasks).

With signing on (docs/security.md), the flood signs as the writer each topic
expects (commands as ``client``, replies as ``worker``, the malformed tasks as
``orchestrator``), so that each bad record reaches the check that refuses it for
what it is (undecodable, misrouted, unknown saga, duplicate...), not merely as
``Unsigned``; and each round adds records whose only fault is their signature:
well-formed commands, replies and tasks that are unsigned, signed by a signer
who may not write them, or whose signature does not match (dead-lettered as
``Unsigned``, ``WrongSigner``, ``BadSignature``).  With signing off those are not
sent (they would be valid input) and nothing is signed.

Every record is written by a plain (non-idempotent) producer and remembered
with where it landed (topic, partition, offset from the delivery report) and,
when it decodes, its envelope's message id; a record the broker refuses (above
the topic's size limit, uncompressed) is remembered as refused.  The checker
(:mod:`sagaline.orchestrator.chaos.invariants`) then requires each accepted one
to be dead-lettered with a reason (matched by source topic/partition/offset) or
journaled as ignored (matched by message id).
"""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ResourceType,
)

from sagaline.orchestrator.chaos.storm_saga import STORM_SAGA, StormData
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.kafka_config import admin_config, client_producer_config
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.signing_runtime import signer_for, signing_config
from sagaline.schemas.base import Envelope, Payload, Record
from sagaline.schemas.codec import SINGLE_OBJECT_MAGIC, RecordCodec
from sagaline.schemas.commands import SignalSaga, StartSaga
from sagaline.schemas.errors import SchemaError
from sagaline.schemas.payload import payload_sha256
from sagaline.schemas.replies import StepFailed, StepSucceeded
from sagaline.schemas.tasks import ExecuteStep

__all__ = ["BadInput", "Flood", "topic_size_limit"]


@dataclass
class BadInput:
    """One bad record: what it is, where it landed (or why the broker refused it)."""

    kind: str
    topic: str
    message_id: str | None = None
    partition: int = -1
    offset: int = -1
    refused: str | None = None


def topic_size_limit(bootstrap: str, topic: str) -> int:
    """The topic's ``max.message.bytes`` (its size limit for a record batch)."""
    admin = AdminClient(admin_config(bootstrap))
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(30)
    return int(configs["max.message.bytes"].value)


def _envelope(saga_id: str) -> Envelope:
    return Envelope(
        message_id=str(uuid.uuid4()),
        saga_id=saga_id,
        saga_type=STORM_SAGA,
        occurred_at=datetime.now(UTC),
    )


def _payload(codec: RecordCodec) -> Payload:
    from sagaline.consumers.wire import dump_payload

    return dump_payload(StormData(n=-1), None, 1 << 30)


def _start(saga_id: str, codec: RecordCodec) -> StartSaga:
    data = _payload(codec)
    return StartSaga(envelope=_envelope(saga_id), data=data, input_sha256=payload_sha256(data))


@dataclass
class Flood:
    """Produces bad input; :attr:`inputs` is everything it wrote or tried to."""

    bootstrap: str
    topics: TopicNames
    partitions: int
    codec: RecordCodec
    seed: int = 0
    inputs: list[BadInput] = field(default_factory=list)
    _rng: random.Random = field(init=False)
    _plain: Producer = field(init=False)
    _zstd: Producer = field(init=False)
    _limits: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        common: dict[str, Any] = {
            "enable.idempotence": False,
            "acks": "all",
            "message.max.bytes": 16 * 1024 * 1024,
            "retries": 1000,
        }
        self._plain = Producer(
            client_producer_config(self.bootstrap, extra={**common, "compression.type": "none"})
        )
        self._zstd = Producer(
            client_producer_config(self.bootstrap, extra={**common, "compression.type": "zstd"})
        )
        self._limits = {
            t: topic_size_limit(self.bootstrap, t)
            for t in (self.topics.commands, self.topics.replies, self.topics.tasks)
        }

    # -- producing -------------------------------------------------------------------

    def _send(
        self,
        kind: str,
        topic: str,
        value: bytes,
        key: bytes | None,
        *,
        partition: int | None = None,
        message_id: str | None = None,
        zstd: bool = False,
        sign_as: str | None = "",
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Write one bad record, signed as ``sign_as`` (``""``: the topic's own writer;
        ``None``: unsigned) unless ``headers`` are given."""
        bad = BadInput(kind, topic, message_id)
        self.inputs.append(bad)

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                bad.refused = err.name()
            else:
                bad.partition, bad.offset = msg.partition() or 0, msg.offset() or 0

        producer = self._zstd if zstd else self._plain
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        signed = headers if headers is not None else self._signature(topic, key, value, sign_as)
        if signed:
            extra["headers"] = signed
        producer.produce(topic, value=value, key=key, on_delivery=delivered, **extra)
        producer.poll(0)

    def _signature(
        self, topic: str, key: bytes | None, value: bytes, sign_as: str | None
    ) -> list[tuple[str, bytes]]:
        """The signature headers of a record (none when signing is off or ``sign_as`` is None)."""
        if sign_as == "":
            sign_as = self._writers.get(topic)
        signer = signer_for(sign_as) if sign_as is not None else None
        return [] if signer is None else signer.headers(topic, key, value)

    @property
    def _writers(self) -> dict[str, str]:
        """The signer each input topic expects (a malformed task is signed as the
        orchestrator would, so that the worker refuses it for its shape)."""
        return {
            self.topics.commands: "client",
            self.topics.replies: "worker",
            self.topics.tasks: "orchestrator",
        }

    def _record(self, kind: str, topic: str, record: Record, key: str, **kw: Any) -> None:
        envelope = getattr(record, "envelope", None)
        mid = envelope.message_id if isinstance(envelope, Envelope) else None
        self._send(kind, topic, self.codec.encode(record), key.encode(), message_id=mid, **kw)

    def _other_partition(self, key: str) -> int:
        right = partition_for(key, self.partitions)
        return (right + 1 + self._rng.randrange(self.partitions - 1)) % self.partitions

    # -- the kinds -------------------------------------------------------------------

    def _shapes(self, topic: str, sample: Record) -> None:
        """Random bytes, a truncated record, an unknown schema fingerprint."""
        key = f"junk-{uuid.uuid4().hex[:8]}".encode()
        self._send("random_bytes", topic, os.urandom(self._rng.randint(1, 300)), key)
        whole = self.codec.encode(sample)
        self._send("truncated", topic, whole[: max(3, len(whole) // 2)], key)
        unknown = SINGLE_OBJECT_MAGIC + os.urandom(8) + whole[10:]
        self._send("unknown_schema", topic, unknown, key)

    def _sizes(self, topic: str) -> None:
        """Records at and above the topic's size limit, compressed and not."""
        limit = self._limits[topic]
        key = f"big-{uuid.uuid4().hex[:8]}".encode()
        self._send("at_size_limit", topic, os.urandom(limit - 512), key)
        self._send("above_size_limit", topic, os.urandom(limit + 4096), key)
        self._send("above_size_limit_zstd", topic, b"\x00" * (5 * limit), key, zstd=True)

    def _commands(self, known: str) -> None:
        topic = self.topics.commands
        ghost = f"ghost-{uuid.uuid4().hex[:10]}"
        start = _start(ghost, self.codec)
        self._shapes(topic, start)
        wrong_key = _start(ghost, self.codec)
        self._record("wrong_key", topic, wrong_key, f"other-{uuid.uuid4().hex[:8]}")
        misrouted = _start(ghost, self.codec)
        self._record(
            "wrong_partition", topic, misrouted, ghost, partition=self._other_partition(ghost)
        )
        signal = SignalSaga(envelope=_envelope(ghost), name="ok", by="storm", approved=True)
        self._record("signal_unknown_saga", topic, signal, ghost)
        again = _start(known, self.codec)
        self._record("duplicate_start", topic, again, known)

    def _reply(self, saga_id: str, step: str, attempt: int) -> StepSucceeded:
        return StepSucceeded(
            envelope=_envelope(saga_id),
            step=step,
            attempt=attempt,
            idempotency_key=f"{saga_id}/{step}",
            task_id=f"{saga_id}/{step}/{attempt}/{uuid.uuid4().hex[:8]}",
        )

    def _replies(self, known: str, duplicate: tuple[bytes | None, bytes] | None) -> None:
        topic = self.topics.replies
        ghost = f"ghost-{uuid.uuid4().hex[:10]}"
        self._shapes(topic, self._reply(ghost, "reserve", 1))
        self._record("reply_unknown_saga", topic, self._reply(ghost, "reserve", 1), ghost)
        self._record("reply_unknown_step", topic, self._reply(known, "no_such_step", 1), known)
        self._record("reply_unknown_attempt", topic, self._reply(known, "reserve", 97), known)
        self._record(
            "reply_wrong_key", topic, self._reply(known, "notify", 1), f"x-{uuid.uuid4().hex}"
        )
        misrouted = self._reply(known, "charge", 1)
        self._record(
            "reply_wrong_partition", topic, misrouted, known, partition=self._other_partition(known)
        )
        if duplicate is not None:
            key, value = duplicate
            try:
                decoded = self.codec.decode(value, (StepSucceeded, StepFailed))
                reply = decoded if isinstance(decoded, StepSucceeded | StepFailed) else None
                mid = reply.envelope.message_id if reply is not None else None
            except SchemaError:  # not a reply: matched by its dead letter only
                mid = None
            self._send("reply_duplicate", topic, value, key, message_id=mid)

    def _signatures(self, known: str) -> None:
        """Well-formed input whose only fault is its signature (signing on only)."""
        commands, replies, tasks = self.topics.commands, self.topics.replies, self.topics.tasks
        ghost = f"ghost-{uuid.uuid4().hex[:10]}"
        self._record("unsigned_start", commands, _start(ghost, self.codec), ghost, sign_as=None)
        self._record(
            "start_wrong_signer", commands, _start(ghost, self.codec), ghost, sign_as="worker"
        )
        self._record(
            "unsigned_reply", replies, self._reply(known, "reserve", 1), known, sign_as=None
        )
        self._record(
            "reply_wrong_signer", replies, self._reply(known, "reserve", 1), known, sign_as="client"
        )
        forged = self._reply(known, "reserve", 1)
        other = self.codec.encode(self._reply(known, "reserve", 1))  # what the signature covers
        self._record(
            "reply_bad_signature",
            replies,
            forged,
            known,
            headers=self._signature(replies, known.encode(), other, "worker"),
        )
        task = self._task(ghost)
        self._record("unsigned_task", tasks, task, ghost, sign_as=None)
        self._record("task_wrong_signer", tasks, self._task(ghost), ghost, sign_as="worker")

    def _task(self, ghost: str) -> ExecuteStep:
        return ExecuteStep(
            envelope=_envelope(ghost),
            step="reserve",
            attempt=1,
            idempotency_key=f"{ghost}/reserve",
            task_id=f"{ghost}/reserve/1",
            args=_payload(self.codec),
        )

    def _tasks(self) -> None:
        task = self._task(f"ghost-{uuid.uuid4().hex[:10]}")
        self._shapes(self.topics.tasks, task)

    def round(
        self, known: str, duplicate: tuple[bytes | None, bytes] | None, *, sizes: bool
    ) -> None:
        """One of every kind on every input topic (``sizes``: the oversized ones too)."""
        self._commands(known)
        self._replies(known, duplicate)
        self._tasks()
        if signing_config().enabled:
            self._signatures(known)
        if sizes:
            for topic in (self.topics.commands, self.topics.replies, self.topics.tasks):
                self._sizes(topic)
        self._plain.poll(0)
        self._zstd.poll(0)

    def flush(self, timeout: float = 120.0) -> None:
        """Wait for every delivery report (a record never reported counts as refused)."""
        self._plain.flush(timeout)
        self._zstd.flush(timeout)
        for bad in self.inputs:
            if bad.offset < 0 and bad.refused is None:
                bad.refused = "no delivery report"
