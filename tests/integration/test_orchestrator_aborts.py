"""Issue 17: aborted and failed transactions lose no input (real Kafka, real broker limits).

A transaction can abort for two kinds of reasons.  A record of it was *refused* for good
(here: an output larger than its topic's ``max.message.bytes``): deciding the same input
again fails again, so after isolation that one input is dead-lettered.  Or the abort says
nothing about the inputs: an out-of-order sequence number or an epoch bump left by an
earlier abort, a transaction the coordinator timed out, a producer fenced by another one
with the same transactional id.  Those inputs are decided again until they commit; a
fatal error re-creates the producer and restores the partitions from what was committed.

Each test checks every saga completes exactly once (one task per step, four journal
entries per saga) and that the only dead letters are the inputs proven poisoned, once each.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from orchestrator_chain import ChainLogic, JsonCodec, start_command
from orchestrator_support import (
    Responder,
    Running,
    delete_prefix_topics,
    fresh_prefix,
    latest_snapshots,
    read_committed,
)

from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.kafka_config import (
    admin_config,
    client_producer_config,
    transactional_producer_config,
)
from sagaline.orchestrator.runtime.ports import Outcome, Outgoing
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.base import Record
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import TASK_TYPES, ExecuteStep

pytestmark = pytest.mark.integration

CODEC = JsonCodec()


class Refusing(ChainLogic):
    """ChainLogic whose start of a saga named ``boom…`` also sends a record the broker refuses
    (incompressible, far above the refusing topic's ``max.message.bytes``), every time.
    ``slow``: the first start of that saga takes ``pause`` seconds to decide (inside the
    transaction); ``on_slow`` is called once it began."""

    def __init__(self, refusing_topic: str, *, slow: str = "", pause: float = 0.0) -> None:
        super().__init__(steps=3, step_timeout_s=3600.0)  # no re-dispatch, however slow
        self.refusing_topic = refusing_topic
        self.slow, self.pause = slow, pause
        self.slowed = threading.Event()

    def decide(self, state: Record | None, message: Record) -> Outcome:
        outcome = super().decide(state, message)
        if not isinstance(message, StartSaga):
            return outcome
        saga_id = message.envelope.saga_id
        if saga_id == self.slow and not self.slowed.is_set():
            self.slowed.set()
            time.sleep(self.pause)
        if saga_id.startswith("boom"):
            big = message.model_copy(update={"requested_by": secrets.token_hex(20_000)})
            extra = Outgoing(self.refusing_topic, big)
            return Outcome(outcome.state, outcome.journal, (*outcome.outgoing, extra))
        return outcome


@pytest.fixture(params=[1, 3], ids=["1-partition", "3-partitions"])
def prefix(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Iterator[str]:
    p = fresh_prefix("aborts")
    ensure_topics(kafka_bootstrap, TopicNames(p), TopicLayout(partitions=request.param))
    refusing = f"{p}.refusing"
    admin = AdminClient(admin_config(kafka_bootstrap))
    new = NewTopic(refusing, 1, 1, config={"max.message.bytes": "2000"})
    admin.create_topics([new])[refusing].result(30)
    yield p
    delete_prefix_topics(kafka_bootstrap, p)


def send_starts(bootstrap: str, prefix: str, ids: list[str]) -> None:
    producer = SignedProducer(client_producer_config(bootstrap), "client")  # signed, if on
    now = datetime.now(UTC)
    for saga_id in ids:
        value = CODEC.encode(start_command(saga_id, when=now))
        producer.produce(f"{prefix}.commands", key=saga_id, value=value)
    assert producer.flush(30) == 0


def wait_terminal(bootstrap: str, prefix: str, ids: list[str], run: Running) -> None:
    deadline = time.monotonic() + 150
    states: dict[str, SagaState] = {}
    while time.monotonic() < deadline and run.error is None:
        states = latest_snapshots(bootstrap, prefix, CODEC)
        if all(i in states and states[i].is_terminal for i in ids):
            return
        time.sleep(0.2)
    missing = [i for i in ids if i not in states]
    unfinished = [i for i in ids if i in states and not states[i].is_terminal]
    raise AssertionError(
        f"orchestrator error {run.error!r}; never started: {missing}; not finished: {unfinished}"
    )


def check_exactly_once(bootstrap: str, prefix: str, ok: list[str], poisoned: list[str]) -> None:
    """Every ok saga completed once; every poisoned start dead-lettered once, with its reason."""
    states = latest_snapshots(bootstrap, prefix, CODEC)
    assert {i: states[i].status for i in ok} == {i: "completed" for i in ok}
    assert not set(poisoned) & set(states)
    tasks = [
        CODEC.decode(r.value, TASK_TYPES)
        for r in read_committed(bootstrap, f"{prefix}.tasks")
        if r.value is not None
    ]
    per_task = Counter(t.task_id for t in tasks if isinstance(t, ExecuteStep))
    assert set(per_task.values()) == {1} and len(per_task) == 3 * len(ok)
    journaled = Counter(r.key for r in read_committed(bootstrap, f"{prefix}.journal"))
    assert journaled == {i: 4 for i in ok}  # the start and three replies, once each
    letters = [
        CODEC.decode(r.value, (DeadLetter,))
        for r in read_committed(bootstrap, f"{prefix}.deadletter")
        if r.value is not None
    ]
    assert sorted((x.key, x.error_type) for x in letters if isinstance(x, DeadLetter)) == [
        (i.encode(), "OutputRejected") for i in sorted(poisoned)
    ]
    for letter in letters:
        assert isinstance(letter, DeadLetter)
        assert "could not be committed" in letter.reason
        assert "MSG_SIZE_TOO_LARGE" in letter.reason or "too large" in letter.reason.lower()
    assert read_committed(bootstrap, f"{prefix}.refusing") == []


def make_orchestrator(bootstrap: str, prefix: str, logic: ChainLogic, **kw: object) -> Orchestrator:
    settings = Settings(kafka_bootstrap_servers=bootstrap, topics=TopicNames(prefix))
    config = EngineConfig(instance_id="a", group_id=f"{prefix}-orch", **kw)  # type: ignore[arg-type]
    return Orchestrator(settings, logic, config, codec=CODEC)


def interleaved(ok: int, booms: int) -> tuple[list[str], list[str], list[str]]:
    """``(order, ok ids, boom ids)``: the booms spread evenly among the ok sagas."""
    ok_ids = [f"ok-{i}" for i in range(ok)]
    boom_ids = [f"boom-{i}" for i in range(booms)]
    order = list(ok_ids)
    step = ok // booms
    for n, boom in enumerate(boom_ids):
        order.insert(step * n + n + step // 2, boom)
    return order, ok_ids, boom_ids


def test_ok_sagas_among_refused_outputs_all_complete(kafka_bootstrap: str, prefix: str) -> None:
    """Eight poisoned starts in the same partitions and batches as 40 ok ones, in two waves
    (the second lands while the first's aborts are being sorted out)."""
    order, ok, booms = interleaved(40, 8)
    orch = make_orchestrator(kafka_bootstrap, prefix, Refusing(f"{prefix}.refusing"))
    responder = Responder(kafka_bootstrap, prefix, CODEC).start()
    try:
        with Running(orch, raise_errors=False, join_s=60) as run:
            send_starts(kafka_bootstrap, prefix, order[: len(order) // 2])
            time.sleep(0.3)
            send_starts(kafka_bootstrap, prefix, order[len(order) // 2 :])
            wait_terminal(kafka_bootstrap, prefix, ok, run)
    finally:
        responder.stop()
    assert run.error is None, run.error
    assert orch.stats.aborted_batches >= len(booms)
    check_exactly_once(kafka_bootstrap, prefix, ok, booms)


@pytest.mark.parametrize("prefix", [1], indirect=True, ids=["1-partition"])
def test_a_transaction_the_coordinator_aborted_loses_no_input(
    kafka_bootstrap: str, prefix: str
) -> None:
    """A decision slower than ``transaction.timeout.ms``: the coordinator aborts the open
    transaction and bumps the epoch under the producer's feet; nothing is lost or doubled,
    and a poisoned start among them is still found and dead-lettered once."""
    order, ok, booms = interleaved(12, 1)
    logic = Refusing(f"{prefix}.refusing", slow="ok-1", pause=16.0)
    orch = make_orchestrator(kafka_bootstrap, prefix, logic, transaction_timeout_ms=4000)
    responder = Responder(kafka_bootstrap, prefix, CODEC).start()
    try:
        with Running(orch, raise_errors=False, join_s=60) as run:
            send_starts(kafka_bootstrap, prefix, order)
            wait_terminal(kafka_bootstrap, prefix, ok, run)
    finally:
        responder.stop()
    assert run.error is None, run.error
    assert logic.slowed.is_set() and orch.stats.aborted_batches >= 1
    check_exactly_once(kafka_bootstrap, prefix, ok, booms)


@pytest.mark.parametrize("prefix", [3], indirect=True, ids=["3-partitions"])
def test_a_fenced_producer_is_recreated_and_state_restored(
    kafka_bootstrap: str, prefix: str
) -> None:
    """Another producer initialises the orchestrator's transactional id while a batch is
    open (an operator fencing a hanging transaction): the orchestrator's producer fails
    fatally; it is re-created, every partition is restored from what was committed, and
    every saga completes exactly once."""
    order, ok, booms = interleaved(12, 1)
    logic = Refusing(f"{prefix}.refusing", slow="ok-1", pause=3.0)
    orch = make_orchestrator(kafka_bootstrap, prefix, logic)
    responder = Responder(kafka_bootstrap, prefix, CODEC).start()
    try:
        with Running(orch, raise_errors=False, join_s=60) as run:
            send_starts(kafka_bootstrap, prefix, order)
            assert logic.slowed.wait(60)
            intruder = Producer(
                transactional_producer_config(kafka_bootstrap, orch.config.transactional_id)
            )
            intruder.init_transactions(30)  # fences the orchestrator's producer
            wait_terminal(kafka_bootstrap, prefix, ok, run)
    finally:
        responder.stop()
    assert run.error is None, run.error
    assert orch.stats.producers_recreated >= 1
    check_exactly_once(kafka_bootstrap, prefix, ok, booms)
