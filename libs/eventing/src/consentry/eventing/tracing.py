"""W3C Trace Context across HTTP and Kafka, with the OpenTelemetry API alone.

A trace crosses a process boundary as two W3C headers, `traceparent` and `tracestate`: on
HTTP under those names, on our topics as the CloudEvents Distributed Tracing extension's
attributes, i.e. the binary-mode Kafka headers `ce_traceparent` / `ce_tracestate`
(`envelope`). Parsing and formatting are OpenTelemetry's (`TraceContextTextMapPropagator`),
never ours; the current trace is OpenTelemetry's current span.

Nothing here needs the OpenTelemetry SDK. Without one, starting a span under a remote parent
yields a non-recording span carrying the parent's context, so the trace id and parent span id
flow on unchanged: an event built while a request or an event is handled carries the same
`traceparent` it came with. With an SDK configured (`configure`, driven by OpenTelemetry's own
`OTEL_*` variables), the same calls record real server and consumer spans, and what flows on
is their span id under the same trace id.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consentry.eventing.logs import get_logger

if TYPE_CHECKING:
    from consentry.eventing.envelope import ReceivedEvent

log = get_logger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# CloudEvents Distributed Tracing extension attributes, as Kafka binary-mode headers.
TRACEPARENT_HEADER = "ce_traceparent"
TRACESTATE_HEADER = "ce_tracestate"

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER = trace.get_tracer("consentry.eventing")


@dataclass(frozen=True, slots=True)
class TraceHeaders:
    """A valid trace context as W3C headers: `traceparent` in its version-00 form and the
    vendors' `tracestate` (None when empty)."""

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        """The 32 hex digits of the trace id."""
        return self.traceparent[3:35]

    @property
    def parent_id(self) -> str:
        """The 16 hex digits of the span id the trace came from."""
        return self.traceparent[36:52]


def _headers_of(context: Context | None) -> TraceHeaders | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context)
    traceparent = carrier.get(TRACEPARENT)
    if traceparent is None:
        return None
    return TraceHeaders(traceparent, carrier.get(TRACESTATE) or None)


def current() -> TraceHeaders | None:
    """The current OpenTelemetry context's trace as headers; None without a valid span."""
    return _headers_of(None)


def extract(traceparent: str | None, tracestate: str | None = None) -> Context:
    """A context holding the remote parent `traceparent` names; an empty context (a new
    trace) when it is absent or malformed, which is never an error."""
    if not traceparent:
        return Context()
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    return _PROPAGATOR.extract(carrier)


def parse(traceparent: str | None, tracestate: str | None = None) -> TraceHeaders | None:
    """`traceparent` (and `tracestate`) as OpenTelemetry reads them, in the form it writes
    them (version 00); None when `traceparent` is absent or malformed."""
    if not traceparent:
        return None
    return _headers_of(extract(traceparent, tracestate))


@contextmanager
def span(
    name: str,
    *,
    traceparent: str | None,
    tracestate: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    tracer: Tracer | None = None,
    attributes: Mapping[str, str] | None = None,
) -> Iterator[Span]:
    """Run the body as span `name`, child of the remote parent `traceparent` (a new trace
    without one), current for its duration: what the body publishes continues the trace.
    Without an SDK the span is the parent itself (non-recording), or invalid without a
    parent, so an event built inside carries exactly the trace it came with, or none."""
    with (tracer or _TRACER).start_as_current_span(
        name, context=extract(traceparent, tracestate), kind=kind, attributes=attributes
    ) as current_span:
        yield current_span


def continuing(event: ReceivedEvent) -> AbstractContextManager[Span]:
    """Handle `event` in a consumer span under the event's trace (`span`): events built in
    the body continue it. Around one event's effect, never around a batch's."""
    return span(
        f"process {event.type.topic}",
        traceparent=event.traceparent,
        tracestate=event.tracestate,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": event.type.topic,
            "messaging.message.id": event.id,
            "cloudevents.event_type": event.type.name,
        },
    )


# OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL -> the exporter package's module.
_OTLP_MODULES = {
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
}
_configured = False


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for exported traces, by OpenTelemetry's own variables:
    `OTEL_TRACES_EXPORTER` (other than `none`) or an OTLP endpoint, and not
    `OTEL_SDK_DISABLED=true`."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER")
    if exporters is not None:
        return any(name.strip() not in ("", "none") for name in exporters.split(","))
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure(service_name: str) -> bool:
    """Install an OpenTelemetry SDK tracer provider for this process if the environment asks
    for one (`wanted`) and the SDK is installed (the `tracing` extra, plus an OTLP exporter
    package for `otlp`); True if installed. Sampling, batching, endpoints and resource
    attributes follow the SDK's own `OTEL_*` variables; `service_name` is the resource's
    `service.name` unless `OTEL_SERVICE_NAME` names one. Propagation does not depend on it."""
    global _configured  # noqa: PLW0603 - one provider per process, set once
    if _configured or not wanted():
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* asks for traces but opentelemetry-sdk is not installed")
        return False
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    for name in (part.strip() for part in names.split(",")):
        exporter = _exporter(name)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True
    log.info("tracing configured", exporters=names)
    return True


def _exporter(name: str) -> Any:
    """The span exporter `OTEL_TRACES_EXPORTER` names (otlp, console), or None."""
    if name in ("", "none"):
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        log.warning("unknown OTEL_TRACES_EXPORTER entry ignored", exporter=name)
        return None
    protocol = (
        os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        ).strip()
        or "http/protobuf"
    )
    module_name = _OTLP_MODULES.get(protocol)
    if module_name is None:
        log.warning("unsupported OTLP protocol; no spans exported", protocol=protocol)
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        log.warning("OTLP exporter not installed; no spans exported", module=module_name)
        return None
    return module.OTLPSpanExporter()
