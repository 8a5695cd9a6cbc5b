"""ASGI middleware: trace context, request log and metrics by route template, and a
request-body size limit."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consentry.eventing import metrics, tracing
from consentry.eventing.logs import get_logger

log = get_logger("consentry.http")

# Metric label values: any other method (a client may send anything) counts as OTHER.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class TraceContext:
    """Runs each request under the W3C trace context of its `traceparent` / `tracestate`
    headers, as a server span (`tracing.span`): the events the request causes carry its
    trace. Without an OpenTelemetry SDK the span is the caller's own span context, so the
    caller's trace id and span id flow on unchanged; with one, a server span named
    `<method> <route template>` is recorded. A malformed or repeated `traceparent` starts a
    new trace (W3C: never an error). Span attributes name the route template, never the raw
    path or query, which may hold a subject identifier."""

    def __init__(self, app: ASGIApp, tracer_provider: TracerProvider | None = None) -> None:
        self.app = app
        self.tracer = trace.get_tracer("consentry.httpapi", tracer_provider=tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parents: list[str] = []
        states: list[str] = []
        for name, value in scope["headers"]:
            if name == b"traceparent":
                parents.append(value.decode("latin-1"))
            elif name == b"tracestate":
                states.append(value.decode("latin-1"))  # several fields: one list (RFC 9110)
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.span(
            method,
            traceparent=parents[0] if len(parents) == 1 else None,
            tracestate=",".join(states) or None,
            kind=SpanKind.SERVER,
            tracer=self.tracer,
            attributes={"http.request.method": method, "url.scheme": scope.get("scheme", "")},
        ) as span:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                if span.is_recording():
                    template = getattr(scope.get("route"), "path", None)
                    if template:
                        span.update_name(f"{method} {template}")
                        span.set_attribute("http.route", template)
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))


class RequestLog:
    """Logs method, route template, status and duration, and counts them in
    `consentry_http_requests_total` / `consentry_http_request_duration_seconds` labelled
    `service`: never the raw path or query, which may contain a subject identifier."""

    def __init__(self, app: ASGIApp, service: str = "") -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template: Any = getattr(route, "path", None) or "(unmatched)"
            duration = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            labels = (self.service, template, method, str(status))
            metrics.HTTP_REQUESTS.labels(*labels).inc()
            metrics.HTTP_DURATION.labels(*labels).observe(duration)
            traced = tracing.current()  # the request's, when TraceContext runs outside
            log.info(
                "request",
                method=scope["method"],
                route=template,
                status=status,
                duration_ms=round(duration * 1000, 2),
                **({"trace_id": traced.trace_id} if traced else {}),
            )


class BodySizeLimit:
    """Refuses request bodies larger than `max_bytes` with 413 problem+json.

    `per_path` raises (or lowers) the limit for exact paths, e.g. a batch endpoint; a path
    with `{name}` segments (a route template) matches any one segment there.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = {path: n for path, n in (per_path or {}).items() if "{" not in path}
        self.templates = [
            (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$"), n)
            for path, n in (per_path or {}).items()
            if "{" in path
        ]

    def _limit(self, path: str) -> int:
        exact = self.per_path.get(path)
        if exact is not None:
            return exact
        for pattern, limit in self.templates:
            if pattern.match(path):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self._limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await _too_large(send, max_bytes)
            return
        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    exceeded = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:  # drop whatever the app answers to a body it never got whole
                await send(message)

        with contextlib.suppress(_BodyTooLargeError):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded:
            await _too_large(send, max_bytes)


class _BodyTooLargeError(Exception):
    pass


async def _too_large(send: Send, max_bytes: int) -> None:
    body = (
        b'{"type":"urn:consentry:problem:payload-too-large","title":"Payload too large",'
        b'"status":413,"detail":"request bodies are limited to %d bytes"}' % max_bytes
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
