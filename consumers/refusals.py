"""Replies Kafka refuses for good on the worker's Kafka-only path (issue 17).

On that path a task's reply is produced in the Kafka transaction that commits the task's
offset.  A reply that Kafka refuses for good (``transactions.refused_for_good``: larger
than the replies topic's ``max.message.bytes`` or the producer's ``message.max.bytes``,
invalid, ...) can never be published, so running the step again cannot help:

* refused by the **client** (``produce()`` raises): the reply is replaced in place, in the
  same transaction, by a small non-retryable failure reply (``ReplyTooLarge`` for a size
  refusal, ``ReplyRefused`` otherwise, naming the size and the limit);
* refused by the **broker** (the delivery report; the transaction aborts and the worker
  rewinds to the committed offsets): the refusal is remembered (task id → failure reply)
  and, when the task is delivered again, the step is **not** run again: the worker
  answers with the remembered failure reply instead.

Either way the refused reply is dead-lettered once (bounded: its first bytes, its length
and its SHA-256), and the saga follows its failure path (compensation).  The memory is
in-process and bounded (:data:`CAPACITY` tasks): a worker that dies between the abort
and the re-delivery runs the step once more (the Kafka-only path is at-least-once across
crashes, docs/guarantees.md), meets the same refusal and answers the same way.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from sagaline.consumers.dead_letters import DeadLetterSender
from sagaline.consumers.replies import refusal_reply
from sagaline.consumers.runner import Delivery, TaskResult
from sagaline.consumers.wire import Codec
from sagaline.orchestrator.runtime.transactions import refused_for_good
from sagaline.schemas.replies import REPLY_TYPES
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = ["CAPACITY", "RefusedReplies", "answer_refused_row", "refusal_type"]

log = logging.getLogger("sagaline.worker")

Task = ExecuteStep | CompensateStep

#: tasks whose refused reply is remembered at most (the oldest are forgotten first)
CAPACITY = 10_000

_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
_CLIENT_DEFAULT_LIMIT = 1_000_000  # librdkafka's message.max.bytes


def refusal_type(err: KafkaError) -> str:
    """The failure reply's ``error_type`` for a refusal: ``ReplyTooLarge`` or ``ReplyRefused``."""
    return "ReplyTooLarge" if err.code() in _TOO_LARGE else "ReplyRefused"


def answer_refused_row(
    letters: DeadLetterSender, topic: str, key: bytes | None, value: bytes, err: KafkaError
) -> bool:
    """Outbox path: after the relay dead-lettered a row Kafka refuses for good, tell the saga.

    When the row is a step or compensation reply, its non-retryable failure reply is
    published in its place (the orchestrator then follows the saga's failure path instead
    of waiting for the step's timeout); any other row: nothing (``False``).
    """
    try:
        refused = letters.codec.decode(value, REPLY_TYPES)
        reason = f"the reply ({len(value)} bytes) was refused for good by Kafka: {err}"
        failure = refusal_reply(refused, refusal_type(err), reason)
    except Exception as exc:  # not a reply we can answer for: the dead letter is all
        log.info("refused outbox row to %s is not a step reply (%s)", topic, exc)
        return False
    what = f"failure reply replacing the refused reply of task {getattr(refused, 'task_id', '')}"
    return letters.publish(topic, key, letters.codec.encode(failure), what)


class RefusedReplies:
    """Turns replies refused for good into failure replies and dead letters (see module)."""

    def __init__(
        self,
        run: Callable[[Task], TaskResult],
        codec: Codec,
        letters: DeadLetterSender,
        producer_config: dict[str, Any],
        capacity: int = CAPACITY,
    ) -> None:
        self._run = run
        self._codec = codec
        self._letters = letters
        self._config = producer_config
        self._capacity = capacity
        self._answers: OrderedDict[str, Delivery] = OrderedDict()
        self._refused: list[tuple[Delivery, KafkaError]] = []
        self._topic_limits: dict[str, str] = {}
        #: replies refused (client and broker) and re-deliveries answered without running
        self.refused = 0
        self.answered = 0

    def run(self, task: Task) -> TaskResult:
        """Run ``task`` unless its reply was refused for good: then answer its failure."""
        answer = self._answers.get(task.task_id)
        if answer is None:
            return self._run(task)
        self.answered += 1
        log.warning(
            "task %s: its reply was refused for good; not running the step again", task.task_id
        )
        return TaskResult(outcome="failed", path="kafka", deliveries=(answer,))

    def watch(self, delivery: Delivery) -> Callable[[KafkaError | None, Message], None]:
        """The ``on_delivery`` of a reply produced into the transaction."""

        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None and refused_for_good(err):
                self._refused.append((delivery, err))

        return report

    def refuse(self, delivery: Delivery, err: KafkaError, *, by_client: bool) -> Delivery:
        """Dead-letter the refused ``delivery``; remember and return its failure reply."""
        self.refused += 1
        limit = self._limit(delivery.topic, by_client)
        who = "the producer" if by_client else "the broker"
        error_type = refusal_type(err)
        reason = (
            f"the reply ({len(delivery.value)} bytes) was refused for good by {who}: {err}; "
            f"limit: {limit}"
        )
        log.error(
            "task reply to %s refused (%s); answering a failure instead", delivery.topic, reason
        )
        headers = {k: v.encode() for k, v in delivery.headers.items()}
        where = (delivery.topic, -1, -1)
        letter = self._letters.letter(
            where, delivery.key, delivery.value, headers, reason, error_type
        )
        self._letters.send(letter, delivery.value)
        refused = self._codec.decode(delivery.value, REPLY_TYPES)
        failure = refusal_reply(refused, error_type, reason)
        answer = Delivery(
            delivery.topic, delivery.key, self._codec.encode(failure), delivery.headers
        )
        task_id = str(getattr(refused, "task_id", ""))
        self._answers[task_id] = answer
        self._answers.move_to_end(task_id)
        while len(self._answers) > self._capacity:
            self._answers.popitem(last=False)
        return answer

    def after_abort(self, producer: Producer) -> int:
        """After an aborted transaction: remember every reply the broker refused in it
        (served by the abort's delivery reports); the number of dead letters written."""
        producer.poll(0)
        refused, self._refused = self._refused, []
        for delivery, err in refused:
            self.refuse(delivery, err, by_client=False)
        return len(refused)

    def _limit(self, topic: str, by_client: bool) -> str:
        if by_client:
            value = self._config.get("message.max.bytes", _CLIENT_DEFAULT_LIMIT)
            return f"{value} bytes (the producer's message.max.bytes)"
        if topic not in self._topic_limits:
            self._topic_limits[topic] = self._describe_limit(topic)
        return self._topic_limits[topic]

    def _describe_limit(self, topic: str) -> str:
        """The topic's ``max.message.bytes`` as the broker reports it (best effort)."""
        unknown = f"the max.message.bytes of {topic}"
        config = {k: v for k, v in self._config.items() if not callable(v)}
        try:
            admin = AdminClient(config)
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
            described = admin.describe_configs([resource], request_timeout=5)[resource]
            entry = described.result(timeout=10).get("max.message.bytes")
        except (KafkaException, ValueError, TypeError, RuntimeError) as exc:
            log.info("could not read %s's max.message.bytes: %s", topic, exc)
            return unknown
        if entry is None or entry.value is None:
            return unknown
        return f"{entry.value} bytes (the max.message.bytes of {topic})"
