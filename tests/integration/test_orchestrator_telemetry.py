"""W3C trace context from the client through decisions, tasks and replies (real Kafka, real SDK)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from orchestrator_sagas import REGISTRY, PipeData, Pipeline
from orchestrator_support import Responder, delete_prefix_topics, read_committed

from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.tasks import TASK_TYPES

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-otel")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=2))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


def _run(orch: Orchestrator) -> threading.Thread:
    thread = threading.Thread(target=orch.run, daemon=True)
    thread.start()
    return thread


def _hex(trace_id: int) -> str:
    return f"{trace_id:032x}"


def test_trace_context_flows_client_to_tasks_to_replies(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    config = EngineConfig(instance_id="otel", group_id=f"{prefix}-orch")
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        with SagaClient(settings, tracer=tracer) as client:
            orch = Orchestrator(settings, CoreLogic(REGISTRY), config, codec=codec, tracer=tracer)
            thread = _run(orch)
            with tracer.start_as_current_span("user request") as root:
                client.start(Pipeline, PipeData(label="traced"), saga_id="traced")
            trace_id = root.get_span_context().trace_id
            assert client.wait("traced", timeout=60).status == "completed"
            orch.request_stop()
            thread.join(30)
            # a second process restores state: its spans never join stored traces
            again = Orchestrator(settings, CoreLogic(REGISTRY), config, codec=codec, tracer=tracer)
            thread = _run(again)
            client.start(Pipeline, PipeData(label="later"), saga_id="later")
            client.wait("later", timeout=60)
            again.request_stop()
            thread.join(30)
    finally:
        responder.stop()

    spans: list[ReadableSpan] = list(exporter.get_finished_spans())
    send = next(s for s in spans if s.name.startswith("send ") and s.context.trace_id == trace_id)
    decisions = [s for s in spans if s.name.startswith("sagaline decide")]
    start = next(
        s
        for s in decisions
        if s.name == "sagaline decide StartSaga" and s.context.trace_id == trace_id
    )
    assert start.parent is not None and start.parent.span_id == send.context.span_id
    replies = [
        s
        for s in decisions
        if s.name == "sagaline decide StepSucceeded" and s.context.trace_id == trace_id
    ]
    assert len(replies) == 5  # each reply continued the client's trace
    batches = [s for s in spans if s.name == "sagaline batch"]
    assert any(link.context.trace_id == trace_id for b in batches for link in b.links)
    assert all(b.parent is None for b in batches)
    restores = [s for s in spans if s.name == "sagaline restore"]
    assert len(restores) >= 2
    assert all(r.parent is None and r.context.trace_id != trace_id for r in restores)

    tasks = [r for r in read_committed(bootstrap, f"{prefix}.tasks") if r.key == "traced"]
    assert len(tasks) == 5
    for rec in tasks:
        assert rec.value is not None
        header = rec.headers["traceparent"].decode()
        assert header.split("-")[1] == _hex(trace_id)
        task = codec.decode(rec.value, TASK_TYPES)
        assert task.envelope.trace["traceparent"] == header  # type: ignore[attr-defined]
