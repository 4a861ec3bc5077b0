"""OpenTelemetry for the orchestrator: spans and W3C trace context in Kafka headers.

Live inputs carry the producer's trace context in the ``traceparent`` /
``tracestate`` Kafka headers (and in ``Envelope.trace``).  A batch span links
to every input's context; a decision span is parented on its input's context;
outgoing tasks and commands carry the decision span's context.  Restore and
replay read stored contexts but never parent new spans on them.

:func:`configure_tracing` installs the SDK with an OTLP/HTTP exporter in a
long-running process when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set (ADR 0015).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "TRACE_HEADERS",
    "KafkaHeaders",
    "ProducerHeaders",
    "carrier_from_context",
    "carrier_from_headers",
    "configure_tracing",
    "context_from_carrier",
    "context_from_headers",
    "decision_span",
    "get_tracer",
    "headers_from_carrier",
    "link_for",
    "records_spans",
]

log = logging.getLogger("sagaline.telemetry")

TRACE_HEADERS = ("traceparent", "tracestate")
#: either variable turns on the OTLP exporter
OTLP_ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROPAGATOR = TraceContextTextMapPropagator()

KafkaHeaders = Mapping[str, bytes | str | None] | Sequence[tuple[str, bytes | str | None]] | None
#: what ``Producer.produce(headers=...)`` accepts
ProducerHeaders = list[tuple[str, str | bytes | None]]


def get_tracer() -> Tracer:
    """The tracer sagaline uses (from the globally configured provider)."""
    return trace.get_tracer("sagaline.orchestrator")


def records_spans(tracer: Tracer) -> bool:
    """Whether spans started with ``tracer`` are recorded anywhere.

    ``False`` for the API's no-op tracer, and for its proxy while no SDK provider
    is installed (no ``configure_tracing``): their spans only pass the parent's
    context through, so a caller may skip them and propagate the parent's carrier.
    """
    if isinstance(tracer, trace.NoOpTracer):
        return False
    if isinstance(tracer, trace.ProxyTracer):
        provider = trace.get_tracer_provider()
        return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    return True


def carrier_from_headers(headers: KafkaHeaders) -> dict[str, str]:
    """The W3C headers found among Kafka message headers."""
    carrier: dict[str, str] = {}
    items = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for key, value in items:
        if key in TRACE_HEADERS and value is not None:
            carrier[key] = value.decode("ascii") if isinstance(value, bytes) else value
    return carrier


def context_from_carrier(carrier: Mapping[str, str]) -> Context | None:
    """The remote span context carried in ``carrier`` (``None`` when there is none)."""
    if "traceparent" not in carrier:
        return None
    ctx = _PROPAGATOR.extract(carrier=dict(carrier))
    span_ctx = trace.get_current_span(ctx).get_span_context()
    return ctx if span_ctx.is_valid else None


def context_from_headers(headers: KafkaHeaders) -> Context | None:
    """The remote span context in Kafka message headers."""
    return context_from_carrier(carrier_from_headers(headers))


def link_for(ctx: Context | None) -> Link | None:
    """A span link to the span in ``ctx`` (``None`` when invalid)."""
    if ctx is None:
        return None
    span_ctx = trace.get_current_span(ctx).get_span_context()
    return Link(span_ctx) if span_ctx.is_valid else None


def carrier_from_context(ctx: Context | None = None) -> dict[str, str]:
    """W3C headers for ``ctx`` (default: the current context)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx if ctx is not None else otel_context.get_current())
    return carrier


def headers_from_carrier(carrier: Mapping[str, str]) -> ProducerHeaders:
    """Kafka headers for a W3C carrier."""
    return [(k, v.encode("ascii")) for k, v in carrier.items() if k in TRACE_HEADERS]


def decision_span(
    inputs: Mapping[str, tuple[type, ...]], saga_id: str, partition: int, record: object
) -> dict[str, Any]:
    """The kind and attributes of the span that decides ``record``.

    Deciding a command or a reply is the ``process`` step of a Kafka message
    (OpenTelemetry's messaging conventions): a CONSUMER span, child of the
    producer's context, naming the topic and partition.  ``inputs`` maps each
    input topic to its record types; anything else (a timer) is INTERNAL.
    """
    attributes: dict[str, str | int] = {
        "sagaline.saga_id": saga_id,
        "messaging.kafka.partition": partition,
    }
    topic = next((t for t, types in inputs.items() if isinstance(record, types)), None)
    if topic is None:
        return {"kind": SpanKind.INTERNAL, "attributes": attributes}
    attributes.update(
        {
            "messaging.system": "kafka",
            "messaging.operation": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
        }
    )
    return {"kind": SpanKind.CONSUMER, "attributes": attributes}


def configure_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Export this process's spans over OTLP/HTTP when an endpoint is configured.

    Installs a global SDK ``TracerProvider`` (``service.name`` = ``service_name``
    unless ``OTEL_SERVICE_NAME`` says otherwise) with a batch processor and the
    OTLP/HTTP protobuf exporter, which reads the standard ``OTEL_EXPORTER_OTLP_*``
    variables.  Spans still queued are flushed at exit.  ``False`` (nothing
    installed) when no endpoint is set.
    """
    env = os.environ if environ is None else environ
    endpoint = next((env[k] for k in OTLP_ENDPOINT_ENV if env.get(k)), None)
    if endpoint is None:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = env.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting spans of %s over OTLP/HTTP to %s", name, endpoint)
    return True
