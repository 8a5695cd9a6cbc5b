"""W3C trace context for the SDK's requests and events (`traceparent`, `tracestate`).

Every HTTP request the clients send carries the current OpenTelemetry context's trace as
`traceparent` / `tracestate` headers, and every event `EventProducer` captures carries it as
`ce_traceparent` / `ce_tracestate` (the CloudEvents Distributed Tracing extension). The
platform continues that trace into the events it publishes and records its traceparent in
the audit entry of each of them, so a trace id started in product code leads to the audit log.

Code that does not use OpenTelemetry itself names the trace with `traced(traceparent)`:
inside the block it is the current context, for the clients and the producer alike. Only
`opentelemetry-api` is needed; it does nothing on its own (no SDK, no exporter).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


def headers() -> dict[str, str]:
    """`traceparent` (and `tracestate`) of the current context; empty outside a trace."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


@contextmanager
def traced(traceparent: str, tracestate: str | None = None) -> Iterator[None]:
    """Make the W3C `traceparent` (e.g. `00-<32 hex trace id>-<16 hex span id>-01`) the
    current trace for the calls and captures in the block; `ValueError` if it is not one."""
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    remote = _PROPAGATOR.extract(carrier)
    if not trace.get_current_span(remote).get_span_context().is_valid:
        raise ValueError("not a W3C traceparent (version-00 form: 00-<trace id>-<span id>-<flags>)")
    token = context.attach(remote)
    try:
        yield
    finally:
        context.detach(token)
