"""ASGI middleware: request log and metrics by route template, and a request-body size limit."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consentry.eventing import metrics
from consentry.eventing.logs import get_logger

log = get_logger("consentry.http")

# Metric label values: any other method (a client may send anything) counts as OTHER.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
            log.info(
                "request",
                method=scope["method"],
                route=template,
                status=status,
                duration_ms=round(duration * 1000, 2),
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
