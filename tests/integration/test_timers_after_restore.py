"""A step timeout that came due while no orchestrator owned the partition does not
overtake the reply written before it (issue 17, storm finding 1).

The storm suite found completed steps run again: an orchestrator restored its
partitions after an outage longer than a step's timeout, fired the overdue timeout
before it had read the replies waiting for it, dispatched the step again, and then
accepted the first attempt's success - while the second attempt was on its way to a
worker, which ran it after the completion was journaled (Kafka-only path, no inbox).

Here every step answers within its timeout while the orchestrator is down; the next
orchestrator starts after the deadline.  Each step must be dispatched once: its
reply, written before the deadline, is decided before the timer.  (Before the fix
the restored orchestrator fired the timeouts first: every step was dispatched twice.)
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from orchestrator_chain import ChainLogic, JsonCodec, start_command
from orchestrator_support import Responder, delete_prefix_topics, read_committed

from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.kafka_config import client_producer_config
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import TASK_TYPES, ExecuteStep

pytestmark = pytest.mark.integration

#: long enough for a loaded machine to dispatch and answer every step before it
TIMEOUT_S = 30.0
SAGAS = 30


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-late")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=2))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


class _Running:
    def __init__(self, settings: Settings) -> None:
        config = EngineConfig(instance_id="one", group_id=f"{settings.topics.prefix}-orch")
        logic = ChainLogic(steps=1, step_timeout_s=TIMEOUT_S)
        self.orch = Orchestrator(settings, logic, config, codec=JsonCodec())
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.orch.run()
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> Orchestrator:
        self.thread.start()
        return self.orch

    def __exit__(self, *exc: object) -> None:
        self.orch.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the orchestrator did not stop within 30 s"
        assert not self.errors, self.errors


def _tasks(settings: Settings, codec: JsonCodec) -> list[ExecuteStep]:
    out = []
    for rec in read_committed(settings.kafka_bootstrap_servers, settings.topics.tasks):
        task = codec.decode(rec.value or b"", TASK_TYPES)
        assert isinstance(task, ExecuteStep)
        out.append(task)
    return out


def _states(settings: Settings, codec: JsonCodec) -> dict[str, SagaState]:
    states: dict[str, SagaState] = {}
    for rec in read_committed(settings.kafka_bootstrap_servers, settings.topics.state):
        if rec.key is not None and rec.value is not None:
            state = codec.decode(rec.value, (SagaState,))
            assert isinstance(state, SagaState)
            states[rec.key] = state
    return states


def _wait(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_reply_written_before_the_deadline_beats_the_overdue_timeout(
    settings: Settings,
) -> None:
    codec = JsonCodec()
    ids = [f"late-{i}" for i in range(SAGAS)]
    producer = SignedProducer(client_producer_config(settings.kafka_bootstrap_servers), "client")
    started = time.time()  # the steps' deadlines count from the starts' time
    for saga_id in ids:
        command = start_command(saga_id, when=datetime.fromtimestamp(started, UTC))
        producer.produce(settings.topics.commands, key=saga_id, value=codec.encode(command))
    assert producer.flush(30) == 0
    with _Running(settings):
        _wait("every first dispatch", lambda: len(_tasks(settings, codec)) >= SAGAS)
    # the orchestrator is down: a worker answers every task at once, well before the deadline
    responder = Responder(
        settings.kafka_bootstrap_servers,
        settings.topics.prefix,
        codec,  # type: ignore[arg-type]
    ).start()
    try:
        _wait("every reply", lambda: responder.answered >= SAGAS)
    finally:
        responder.stop()
    assert time.time() - started < TIMEOUT_S - 1, "the replies came too late for this test"
    time.sleep(max(0.0, started + TIMEOUT_S + 1.0 - time.time()))  # every timeout overdue
    with _Running(settings):
        _wait(
            "every saga completed",
            lambda: (
                all(s.status == "completed" for s in _states(settings, codec).values())
                and len(_states(settings, codec)) == SAGAS
            ),
        )
    per_saga = Counter(task.envelope.saga_id for task in _tasks(settings, codec))
    again = {saga_id: n for saga_id, n in per_saga.items() if n != 1}
    assert not again, f"steps dispatched again although their replies beat the deadline: {again}"
