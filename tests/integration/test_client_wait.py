"""SagaClient waits share one reader (issue 11, goal 7), and miss nothing.

Real Kafka, a real orchestrator in a thread and the test responder; no timing
is asserted (the benchmark ``sagaline bench e2e`` reports how fast a wait
returns).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from orchestrator_sagas import REGISTRY, PipeData, Pipeline
from orchestrator_support import Responder, delete_prefix_topics
from test_orchestrator_sagas import Running

from sagaline.orchestrator.client import SagaClient, WaitTimeout
from sagaline.orchestrator.client.watch import SnapshotWatch
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-wait")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=3))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


def _orchestrator(settings: Settings) -> Orchestrator:
    config = EngineConfig(instance_id="w", group_id=f"{settings.topics.prefix}-orch")
    return Orchestrator(settings, CoreLogic(REGISTRY), config, codec=AvroCodec())


def test_one_reader_serves_many_waits_and_finished_sagas(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[SnapshotWatch] = []
    original = SnapshotWatch.__init__

    def counting(self: SnapshotWatch, *args: object, **kwargs: object) -> None:
        created.append(self)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SnapshotWatch, "__init__", counting)
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    responder = Responder(bootstrap, prefix, AvroCodec()).start()
    ids = [f"many-{i}" for i in range(40)]
    try:
        with Running(_orchestrator(settings)):
            with SagaClient(settings) as client:
                handles = [
                    client.start(Pipeline, PipeData(label=i), saga_id=i, flush=False) for i in ids
                ]
                client.flush()
                finals = [h.wait(timeout=60) for h in handles]
                # the same saga again: answered from the reader's cache
                again = handles[0].wait(timeout=30)
            # a new client, sagas long finished before it existed: found by re-reading
            with SagaClient(settings) as late:
                earlier = [late.wait(i, timeout=30) for i in ids[:5]]
                with pytest.raises(WaitTimeout):
                    late.wait("never-started", timeout=2)
    finally:
        responder.stop()
    assert responder.error is None
    assert [s.saga_id for s in finals] == ids
    assert {s.status for s in finals} == {"completed"}
    assert again.status == "completed" and again.saga_id == ids[0]
    assert [s.saga_id for s in earlier] == ids[:5]
    assert {s.status for s in earlier} == {"completed"}
    assert len(created) == 2  # one reader per client, not one per wait
