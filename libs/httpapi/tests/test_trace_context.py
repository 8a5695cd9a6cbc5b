"""The trace-context middleware: a request's `traceparent` is the current trace while the
request is handled, so the events it causes carry it; with an SDK, a server span is recorded."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp

from consentry.eventing import tracing
from consentry.eventing.testing import consent_event
from consentry.httpapi.middleware import TraceContext
from consentry.httpapi.server import HttpSettings, harden

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE"
TENANT = "00000000-0000-4000-8000-0000000000e2"


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/subjects/{subject_id}/trace")
    async def seen(subject_id: str) -> dict[str, str | None]:
        """What the request's code sees, and what an event it builds carries."""
        current = tracing.current()
        event = consent_event(TENANT, "ab" * 32, 1)
        return {
            "traceparent": current.traceparent if current else None,
            "tracestate": current.tracestate if current else None,
            "event_traceparent": event.traceparent,
        }

    return app


async def get(app: ASGIApp, headers: list[tuple[str, str]]) -> dict[str, str | None]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/subjects/someone@example.com/trace", headers=headers)
    assert response.status_code == 200
    body: dict[str, str | None] = response.json()
    return body


async def test_the_callers_trace_flows_into_the_request_and_its_events_without_an_sdk() -> None:
    app = harden(make_app(), HttpSettings())
    seen = await get(app, [("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)])
    assert seen == {
        "traceparent": TRACEPARENT,
        "tracestate": TRACESTATE,
        "event_traceparent": TRACEPARENT,
    }


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("traceparent", "garbage")],
        [("traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-01")],
        [("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT)],  # repeated: invalid
    ],
)
async def test_without_a_valid_traceparent_the_request_is_untraced(
    headers: list[tuple[str, str]],
) -> None:
    seen = await get(harden(make_app(), HttpSettings()), headers)
    assert seen == {"traceparent": None, "tracestate": None, "event_traceparent": None}


async def test_with_an_sdk_a_server_span_continues_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = TraceContext(make_app(), tracer_provider=provider)
    seen = await get(app, [("traceparent", TRACEPARENT)])
    (span,) = exporter.get_finished_spans()
    context = span.get_span_context()
    assert context is not None
    assert span.parent is not None
    assert f"{context.trace_id:032x}" == TRACEPARENT[3:35]  # the caller's trace
    assert f"{span.parent.span_id:016x}" == TRACEPARENT[36:52]  # under the caller's span
    # the request's code and its events continue from the server span
    assert (
        seen["event_traceparent"]
        == seen["traceparent"]
        == (f"00-{context.trace_id:032x}-{context.span_id:016x}-01")
    )
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /subjects/{subject_id}/trace"
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/subjects/{subject_id}/trace"
    assert attributes["http.response.status_code"] == 200
    assert "someone" not in repr(attributes)  # the raw path (a subject id) is never recorded
    provider.shutdown()
