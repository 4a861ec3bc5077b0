"""One saga's trace across the real processes, exported over OTLP/HTTP.

The orchestrator, worker, relay and projection run as ``sagaline`` OS
processes with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointed at a small OTLP/HTTP
receiver in this test, which decodes the protobuf export requests
(``opentelemetry-proto``).  One demo refund runs under a client span; the
test follows the parent/child chain of that one trace from the client through
the orchestrator's decision, the worker's step (and its database transaction)
and the relay's publication back to the orchestrator's next decision.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from observe_stack import free_port, run_refunds, running_stack
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from sagaline.orchestrator.client import SagaClient

pytestmark = pytest.mark.integration

CLIENT = "refund-client"


@dataclass(frozen=True)
class Received:
    service: str
    span: Span

    @property
    def name(self) -> str:
        return self.span.name

    def attribute(self, key: str) -> str | None:
        for kv in self.span.attributes:
            if kv.key == key:
                return str(kv.value.string_value)
        return None


class _Receiver(ThreadingHTTPServer):
    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.spans: list[Received] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received: list[Received] = []
        for resource_spans in request.resource_spans:
            service = next(
                (
                    kv.value.string_value
                    for kv in resource_spans.resource.attributes
                    if kv.key == "service.name"
                ),
                "?",
            )
            for scope in resource_spans.scope_spans:
                received.extend(Received(service, span) for span in scope.spans)
        with self.server.lock:
            self.server.spans.extend(received)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def render_tree(spans: list[Received]) -> str:
    """The trace as an indented tree: process, span name, duration."""
    ids = {s.span.span_id for s in spans}
    children: dict[bytes, list[Received]] = {}
    roots: list[Received] = []
    for s in sorted(spans, key=lambda s: s.span.start_time_unix_nano):
        if s.span.parent_span_id and s.span.parent_span_id in ids:
            children.setdefault(s.span.parent_span_id, []).append(s)
        else:
            roots.append(s)
    lines: list[str] = []

    def walk(s: Received, depth: int) -> None:
        ms = (s.span.end_time_unix_nano - s.span.start_time_unix_nano) / 1e6
        lines.append(f"{'  ' * depth}{s.service:<22} {s.name:<44} {ms:9.2f} ms")
        for child in children.get(s.span.span_id, []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return "\n".join(lines)


def _within(ctx: otel_context.Context) -> Callable[[Callable[[], None]], None]:
    def run(f: Callable[[], None]) -> None:
        token = otel_context.attach(ctx)
        try:
            f()
        finally:
            otel_context.detach(token)

    return run


def test_one_refund_is_one_trace_across_orchestrator_worker_and_relay(
    kafka_bootstrap: str,
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
    receiver: _Receiver,
) -> None:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    provider = TracerProvider(resource=Resource.create({"service.name": CLIENT}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"{endpoint}/v1/traces")))
    tracer = provider.get_tracer("test")
    prefix = f"{topic_prefix}-tr"
    with running_stack(
        kafka_bootstrap, database_url, prefix, tmp_path, console=False, env=env
    ) as stack:
        root = tracer.start_span("refund request")
        within = _within(trace.set_span_in_context(root))
        try:
            with SagaClient(stack.settings, tracer=tracer) as client:
                states = run_refunds(stack, client, 1, start=within)
            root.end()
            assert [s.status for s in states.values()] == ["completed"]
            codes = stack.cluster.stop_all()  # the processes flush their spans at exit
            assert all(code == 0 for code in codes.values()), (codes, stack.logs())
        except BaseException:
            print(stack.logs())
            raise
    provider.shutdown()

    trace_id = root.get_span_context().trace_id.to_bytes(16, "big")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with receiver.lock:
            spans = [s for s in receiver.spans if s.span.trace_id == trace_id]
        if {"sagaline-orchestrator", "sagaline-worker", "sagaline-relay"} <= {
            s.service for s in spans
        }:
            break
        time.sleep(0.2)
    print(f"\none demo refund saga, trace {trace_id.hex()}:\n{render_tree(spans)}")
    _check_chain(spans, f"{prefix}.replies", f"{prefix}.tasks", f"{prefix}.commands")


def _check_chain(spans: list[Received], replies: str, tasks: str, commands: str) -> None:
    by_id = {s.span.span_id: s for s in spans}

    def parent(s: Received) -> Received | None:
        return by_id.get(s.span.parent_span_id)

    def ancestors(s: Received) -> list[Received]:
        chain: list[Received] = []
        while (p := parent(s)) is not None:
            chain.append(p)
            s = p
        return chain

    assert {s.service for s in spans} >= {
        CLIENT,
        "sagaline-orchestrator",
        "sagaline-worker",
        "sagaline-relay",
    }
    # every span of the saga descends from the client's root span: one trace, no orphans
    roots = [s for s in spans if not s.span.parent_span_id]
    assert [r.name for r in roots] == ["refund request"]
    assert all(ancestors(s)[-1].name == "refund request" for s in spans if s not in roots)

    relay_sends = [s for s in spans if s.service == "sagaline-relay"]
    assert relay_sends
    for send in relay_sends:
        assert send.span.kind == Span.SPAN_KIND_PRODUCER
        assert send.attribute("messaging.system") == "kafka"
        assert send.attribute("messaging.destination.name") == replies
        assert send.attribute("messaging.operation") == "publish"
        step = parent(send)
        assert step is not None and step.service == "sagaline-worker"
        assert step.span.kind == Span.SPAN_KIND_CONSUMER
        assert step.attribute("messaging.destination.name") == tasks
        decision = parent(step)
        assert decision is not None and decision.service == "sagaline-orchestrator"
        assert decision.name.startswith("sagaline decide")
        # deciding a command or a reply is the messaging "process" span of that message
        assert decision.span.kind == Span.SPAN_KIND_CONSUMER
        assert decision.attribute("messaging.operation") == "process"
        assert decision.attribute("messaging.destination.name") in (commands, replies)
        # the worker's database transaction is a child of its step
        assert any(c.name == "sagaline db transaction" and parent(c) is step for c in spans), (
            step.name
        )
        # and the orchestrator decides the reply as a child of the relay's publication
        assert any(
            c.service == "sagaline-orchestrator"
            and parent(c) is send
            and c.attribute("messaging.destination.name") == replies
            for c in spans
        ), f"no decision under {send.name}"
