"""Replay, audit and the read model over a journal the real orchestrator wrote.

The Kafka runtime (exactly-once loop, ``CoreLogic`` over the real decider)
runs sagas answered by a test responder; then the journal it produced is
audited, replayed strictly against the same definitions, and projected into
PostgreSQL, whose ``status`` must agree with the state topic's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from orchestrator_sagas import REGISTRY, Approved, PipeData, Pipeline
from orchestrator_support import Responder, delete_prefix_topics

from sagaline.consumers.projections import JournalProjection, get_saga
from sagaline.orchestrator.audit import audit
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.replay import definition_lookup, replay
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.signing_inputs import signed_identity
from sagaline.orchestrator.runtime.signing_runtime import signing_config
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-rt")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=2))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


def _run_sagas(settings: Settings) -> dict[str, str]:
    """Run 3 pipelines, one approved and one rejected saga; return id -> final status."""
    config = EngineConfig(instance_id="a", group_id=f"{settings.topics.prefix}-orch")
    orch = Orchestrator(settings, CoreLogic(REGISTRY), config, codec=AvroCodec())
    failure: list[BaseException] = []

    def run() -> None:
        try:
            orch.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    responder = Responder(settings.kafka_bootstrap_servers, settings.topics.prefix, AvroCodec())
    responder.start()
    thread.start()
    try:
        with SagaClient(settings) as client:
            handles = [
                client.start(Pipeline, PipeData(label=str(i)), saga_id=f"pipe-{i}")
                for i in range(3)
            ]
            ok = client.start(Approved, PipeData(label="ok"), saga_id="approve-me")
            no = client.start(Approved, PipeData(label="no"), saga_id="reject-me")
            for saga_id in ("approve-me", "reject-me"):
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    state = client.status(saga_id)
                    if state is not None and state.waits:
                        break
                    time.sleep(0.1)
            client.approve("approve-me", "manager_ok", by="alice@example.com")
            client.reject("reject-me", "manager_ok", by="bob@example.com", note="fraud")
            finals: dict[str, str] = {
                h.saga_id: h.wait(timeout=60).status for h in [*handles, ok, no]
            }
    finally:
        responder.stop()
        orch.request_stop()
        thread.join(30)
    assert not failure, failure
    return finals


def test_a_real_orchestrator_journal_audits_replays_and_projects(
    settings: Settings, database_url: str, pg_schema: str
) -> None:
    finals = _run_sagas(settings)
    assert finals["approve-me"] == "completed" and finals["reject-me"] == "compensated"
    bootstrap, journal = settings.kafka_bootstrap_servers, settings.topics.journal

    report = audit(bootstrap, journal, timeout=60)
    assert report.ok, report.render()
    assert report.sagas == len(finals)
    assert report.statuses == {"completed": 4, "compensated": 1}

    replayed = replay(bootstrap, journal, strict=True, definitions=definition_lookup(REGISTRY))
    assert replayed.ok, [d.render() for d in replayed.divergences]
    timelines = {t.saga_id: t for t in replayed.sagas}
    approvals = timelines["approve-me"].approvals
    by = "alice@example.com"  # with signing on, after the verified signer (the client's)
    by = signed_identity("admin", by) if signing_config().enabled else by
    assert [(a.outcome, a.by) for a in approvals] == [("approved", by)]
    assert [c.step for c in timelines["reject-me"].compensations] == ["reserve"]

    projection = JournalProjection(
        bootstrap, journal, database_url, schema=pg_schema, projection=f"{pg_schema}-p"
    )
    projection.run(until_caught_up=True, timeout=90)
    assert projection.stats.applied == replayed.entries
    with SagaClient(settings) as client:
        for saga_id, status in finals.items():
            row = get_saga(database_url, saga_id, schema=pg_schema)
            state = client.status(saga_id)
            assert row is not None and state is not None
            assert row.status == status == state.status
            assert row.last_seq == state.journal_seq
