"""The Kafka runtime with a minimal real saga logic (ChainLogic) on real Kafka."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from orchestrator_chain import ChainLogic, JsonCodec, start_command
from orchestrator_support import (
    Responder,
    Running,
    delete_prefix_topics,
    fresh_prefix,
    read_committed,
)
from orchestrator_support import latest_snapshots as latest_states

from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.errors import TopicConfigError
from sagaline.orchestrator.runtime.kafka_config import admin_config, client_producer_config
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.ports import Outcome, Outgoing
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.base import Record
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import TASK_TYPES, ExecuteStep
from sagaline.schemas.timers import TimerFired

pytestmark = pytest.mark.integration


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    return kafka_bootstrap


def wait_terminal(
    bootstrap: str, prefix: str, codec: JsonCodec, ids: list[str], timeout: float
) -> dict[str, SagaState]:
    deadline = time.monotonic() + timeout
    states: dict[str, SagaState] = {}
    while time.monotonic() < deadline:
        states = latest_states(bootstrap, prefix, codec)
        if all(i in states and states[i].is_terminal for i in ids):
            return states
        time.sleep(0.2)
    unfinished = [i for i in ids if i not in states or not states[i].is_terminal]
    detail = [states.get(i) for i in unfinished[:2]]
    raise AssertionError(f"{len(unfinished)} sagas not terminal, e.g. {unfinished[:3]}: {detail}")


def send_starts(bootstrap: str, prefix: str, codec: JsonCodec, ids: list[str]) -> None:
    producer = SignedProducer(client_producer_config(bootstrap), "client")  # signed, if on
    now = datetime.now(UTC)
    failed: list[object] = []
    for saga_id in ids:
        producer.produce(
            f"{prefix}.commands",
            key=saga_id,
            value=codec.encode(start_command(saga_id, when=now)),
            on_delivery=lambda err, _msg: failed.append(err) if err is not None else None,
        )
    assert producer.flush(30) == 0
    assert not failed, failed


def make_orchestrator(bootstrap: str, prefix: str, instance: str, **kw: object) -> Orchestrator:
    settings = Settings(kafka_bootstrap_servers=bootstrap, topics=TopicNames(prefix))
    config = EngineConfig(instance_id=instance, group_id=f"{prefix}-orch", **kw)  # type: ignore[arg-type]
    return Orchestrator(
        settings, ChainLogic(steps=3, step_timeout_s=2.0), config, codec=JsonCodec()
    )


@pytest.fixture
def prefix(bootstrap: str) -> Iterator[str]:
    p = fresh_prefix("rt")
    ensure_topics(bootstrap, TopicNames(p), TopicLayout(partitions=3))
    yield p
    delete_prefix_topics(bootstrap, p)


def test_sagas_complete_exactly_once(bootstrap: str, prefix: str) -> None:
    codec = JsonCodec()
    ids = [f"chain-{i}" for i in range(40)]
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        with Running(make_orchestrator(bootstrap, prefix, "a")) as run:
            send_starts(bootstrap, prefix, codec, ids)
            states = wait_terminal(bootstrap, prefix, codec, ids, timeout=60)
            assert run.error is None
    finally:
        responder.stop()
    assert responder.error is None
    assert {states[i].status for i in ids} == {"completed"}
    tasks = [
        codec.decode(r.value, TASK_TYPES)
        for r in read_committed(bootstrap, f"{prefix}.tasks")
        if r.value
    ]
    # every task exactly once: the transaction either published it once or not at all
    executes = [t for t in tasks if isinstance(t, ExecuteStep)]
    counts = Counter(t.task_id for t in executes)
    assert set(counts.values()) == {1}
    # each of the 3 steps of every saga was dispatched; a further attempt only
    # when the step's timeout passed first (a loaded machine), never a repeat
    first = {(t.envelope.saga_id, t.step) for t in executes if t.attempt == 1}
    assert len(first) == 3 * len(ids)
    assert len({(t.envelope.saga_id, t.step, t.attempt) for t in executes}) == len(executes)
    # state snapshots live in the partition of the saga's commands
    commands = {r.key: r.partition for r in read_committed(bootstrap, f"{prefix}.commands")}
    for rec in read_committed(bootstrap, f"{prefix}.state"):
        assert rec.partition == commands[rec.key]


def test_step_timeout_timer_redispatches(bootstrap: str, prefix: str) -> None:
    codec = JsonCodec()
    ids = ["timer-1", "timer-2"]
    # the responder ignores step s2 once: only the step-timeout timer moves the saga
    responder = Responder(bootstrap, prefix, codec, skip=["s2"]).start()
    try:
        with Running(make_orchestrator(bootstrap, prefix, "a")) as run:
            send_starts(bootstrap, prefix, codec, ids)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                attempts = [
                    t for t in responder.seen if isinstance(t, ExecuteStep) and t.step == "s2"
                ]
                if len([t for t in attempts if t.attempt >= 2]) >= 2:
                    break
                time.sleep(0.2)
            responder.skip.clear()
            states = wait_terminal(bootstrap, prefix, codec, ids, timeout=30)
            assert run.error is None
    finally:
        responder.stop()
    assert {states[i].status for i in ids} == {"completed"}
    for i in ids:
        assert states[i].steps["s2"].attempt >= 2
        # every attempt of the step carries the one idempotency key the state records
        sent = [
            t
            for t in responder.seen
            if isinstance(t, ExecuteStep) and t.step == "s2" and t.envelope.saga_id == i
        ]
        assert len({t.attempt for t in sent}) >= 2
        assert {t.idempotency_key for t in sent} == {states[i].steps["s2"].idempotency_key}


def test_poison_input_is_dead_lettered_and_partition_keeps_flowing(
    bootstrap: str, prefix: str
) -> None:
    codec = JsonCodec()
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        with Running(make_orchestrator(bootstrap, prefix, "a")) as run:
            producer = Producer(client_producer_config(bootstrap))
            producer.produce(f"{prefix}.commands", key="poison", value=b"\x00not a record")
            producer.produce(f"{prefix}.replies", key="ghost", value=b"{}")
            assert producer.flush(10) == 0
            send_starts(bootstrap, prefix, codec, ["poison", "after-poison"])
            wait_terminal(bootstrap, prefix, codec, ["poison", "after-poison"], timeout=30)
            assert run.error is None
    finally:
        responder.stop()
    letters = [
        codec.decode(r.value, (DeadLetter,))
        for r in read_committed(bootstrap, f"{prefix}.deadletter")
        if r.value
    ]
    assert len(letters) == 2
    assert all(isinstance(letter, DeadLetter) for letter in letters)
    assert {letter.key for letter in letters} == {b"poison", b"ghost"}  # type: ignore[attr-defined]
    assert all(letter.reason for letter in letters)  # type: ignore[attr-defined]


def test_refuses_topics_that_are_not_copartitioned(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    p = fresh_prefix("copart")
    names = TopicNames(p)
    admin = AdminClient(admin_config(bootstrap))
    futures = admin.create_topics(
        [
            NewTopic(names.commands, num_partitions=2, replication_factor=1),
            NewTopic(names.replies, num_partitions=3, replication_factor=1),
        ]
    )
    for f in futures.values():
        f.result(30)
    try:
        with pytest.raises(TopicConfigError, match="same partition count"):
            ensure_topics(bootstrap, names, TopicLayout(partitions=3))
    finally:
        delete_prefix_topics(bootstrap, p)


def test_partition_for_matches_the_producers_partitioner(bootstrap: str, prefix: str) -> None:
    """The client finds a saga's state partition with the rule producers use."""
    producer = Producer(client_producer_config(bootstrap))
    keys = [f"saga-{i}" for i in range(60)]
    for key in keys:
        producer.produce(f"{prefix}.commands", key=key, value=b"x")
    assert producer.flush(30) == 0
    seen = {r.key: r.partition for r in read_committed(bootstrap, f"{prefix}.commands")}
    assert seen == {key: partition_for(key, 3) for key in keys}


class FailOnce(ChainLogic):
    """ChainLogic that, the first time it starts saga ``boom``, also sends a record the
    broker refuses (the topic's ``max.message.bytes`` is tiny): the transaction fails."""

    def __init__(self, refusing_topic: str, *, always: bool = False) -> None:
        super().__init__(steps=3, step_timeout_s=30.0)
        self.refusing_topic = refusing_topic
        self.tripped = False
        self.always = always

    def decide(self, state: Record | None, message: Record) -> Outcome:
        outcome = super().decide(state, message)
        boom = isinstance(message, StartSaga) and message.envelope.saga_id == "boom"
        if boom and (self.always or not self.tripped):
            self.tripped = True
            noise = secrets.token_hex(20_000)  # incompressible: far above max.message.bytes
            big = message.model_copy(update={"requested_by": noise})
            return Outcome(
                outcome.state,
                outcome.journal,
                (*outcome.outgoing, Outgoing(self.refusing_topic, big)),
            )
        return outcome


def test_abortable_error_aborts_rewinds_and_discards_the_batch(bootstrap: str, prefix: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    refusing = f"{prefix}.refusing"
    admin = AdminClient(admin_config(bootstrap))
    admin.create_topics([NewTopic(refusing, 1, 1, config={"max.message.bytes": "2000"})])[
        refusing
    ].result(30)
    codec = JsonCodec()
    logic = FailOnce(refusing)
    settings = Settings(kafka_bootstrap_servers=bootstrap, topics=TopicNames(prefix))
    config = EngineConfig(instance_id="a", group_id=f"{prefix}-orch")
    orch = Orchestrator(settings, logic, config, codec=codec)
    ids = ["before", "boom", "after"]
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        with Running(orch) as run:
            send_starts(bootstrap, prefix, codec, ids)
            states = wait_terminal(bootstrap, prefix, codec, ids, timeout=60)
            assert run.error is None
    finally:
        responder.stop()
    assert logic.tripped and orch.stats.aborted_batches >= 1
    assert {states[i].status for i in ids} == {"completed"}
    # nothing of the aborted transaction is visible, and nothing was decided twice
    assert read_committed(bootstrap, refusing) == []
    tasks = [
        codec.decode(r.value, TASK_TYPES)
        for r in read_committed(bootstrap, f"{prefix}.tasks")
        if r.value
    ]
    counts = Counter(t.task_id for t in tasks if isinstance(t, ExecuteStep))
    assert set(counts.values()) == {1} and len(counts) == 3 * len(ids)
    journaled = [r.key for r in read_committed(bootstrap, f"{prefix}.journal")]
    assert Counter(journaled) == {i: 4 for i in ids}  # start + three replies, once each


def test_an_input_whose_output_is_always_refused_is_dead_lettered(
    bootstrap: str, prefix: str
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    refusing = f"{prefix}.refusing"
    admin = AdminClient(admin_config(bootstrap))
    new = NewTopic(refusing, 1, 1, config={"max.message.bytes": "2000"})
    admin.create_topics([new])[refusing].result(30)
    codec = JsonCodec()
    settings = Settings(kafka_bootstrap_servers=bootstrap, topics=TopicNames(prefix))
    config = EngineConfig(instance_id="a", group_id=f"{prefix}-orch")
    orch = Orchestrator(settings, FailOnce(refusing, always=True), config, codec=codec)
    ids = [f"ok-{i}" for i in range(10)]
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        with Running(orch) as run:
            send_starts(bootstrap, prefix, codec, [*ids[:5], "boom", *ids[5:]])
            states = wait_terminal(bootstrap, prefix, codec, ids, timeout=90)
            assert run.error is None
    finally:
        responder.stop()
    assert {states[i].status for i in ids} == {"completed"}
    assert "boom" not in states
    letters = [
        codec.decode(r.value, (DeadLetter,))
        for r in read_committed(bootstrap, f"{prefix}.deadletter")
        if r.value is not None
    ]
    assert [(x.key, x.error_type) for x in letters if isinstance(x, DeadLetter)] == [
        (b"boom", "OutputRejected")
    ]
    assert read_committed(bootstrap, refusing) == []


class TimerBomb(ChainLogic):
    """Firing the step timeout of saga ``tbomb`` decides an output the broker refuses."""

    def __init__(self, refusing_topic: str) -> None:
        super().__init__(steps=3, step_timeout_s=1.0)
        self.refusing_topic = refusing_topic

    def decide(self, state: Record | None, message: Record) -> Outcome:
        outcome = super().decide(state, message)
        if isinstance(message, TimerFired) and message.envelope.saga_id == "tbomb":
            noise = StartSaga.model_validate(
                {
                    **start_command("tbomb", when=message.envelope.occurred_at).model_dump(),
                    "requested_by": secrets.token_hex(20_000),
                }
            )
            return Outcome(
                outcome.state,
                outcome.journal,
                (*outcome.outgoing, Outgoing(self.refusing_topic, noise)),
            )
        return outcome


def test_a_timer_whose_decision_never_commits_does_not_block_the_partition(
    bootstrap: str, prefix: str
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    refusing = f"{prefix}.refusing"
    admin = AdminClient(admin_config(bootstrap))
    new = NewTopic(refusing, 1, 1, config={"max.message.bytes": "2000"})
    admin.create_topics([new])[refusing].result(30)
    codec = JsonCodec()
    settings = Settings(kafka_bootstrap_servers=bootstrap, topics=TopicNames(prefix))
    config = EngineConfig(instance_id="a", group_id=f"{prefix}-orch")
    orch = Orchestrator(settings, TimerBomb(refusing), config, codec=codec)
    ids = [f"ok-{i}" for i in range(10)]
    responder = Responder(bootstrap, prefix, codec, skip_sagas=["tbomb"]).start()
    try:
        with Running(orch) as run:
            send_starts(bootstrap, prefix, codec, ["tbomb"])
            time.sleep(1.5)  # the bomb's timer is due while the others arrive
            send_starts(bootstrap, prefix, codec, ids)
            states = wait_terminal(bootstrap, prefix, codec, ids, timeout=60)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and orch.stats.dead_letters < 1:
                time.sleep(0.1)
            assert run.error is None
    finally:
        responder.stop()
    assert {states[i].status for i in ids} == {"completed"}
    letters = [
        codec.decode(r.value, (DeadLetter,))
        for r in read_committed(bootstrap, f"{prefix}.deadletter")
        if r.value is not None
    ]
    summary = [(x.key, x.error_type, x.source_topic) for x in letters if isinstance(x, DeadLetter)]
    assert summary == [(b"tbomb", "OutputRejected", f"{prefix}.state#timers")]
    assert read_committed(bootstrap, refusing) == []
