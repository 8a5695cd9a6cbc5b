"""A lean HTTP/1.1 keep-alive client over asyncio streams: pre-built requests, minimal parsing.

Only what the benchmark needs: one request at a time per connection, responses framed by
`Content-Length` (every consentry JSON response has one). No TLS, no chunked encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from consentry.devstack.services import DEV_API_KEY

PURPOSE = "performance"
POLICY_VERSION = "2026-11"
# uvicorn closes keep-alive connections idle for 5 s; reconnect before reusing such a one.
MAX_IDLE_S = 4.0
# The 4-purpose capture of a cookie banner (POST /v1/subjects/{id}/consents), in two variants
# that differ in every purpose: alternating them per subject makes every write a change.
CAPTURE_PURPOSES = ("performance", "functionality", "targeting", "marketing-email")
CAPTURES: tuple[dict[str, str], dict[str, str]] = (
    dict(zip(CAPTURE_PURPOSES, ("given", "given", "withdrawn", "given"), strict=True)),
    dict(zip(CAPTURE_PURPOSES, ("withdrawn", "withdrawn", "given", "withdrawn"), strict=True)),
)


def capture_body(variant: int) -> bytes:
    """The JSON body of capture variant 0 or 1 (policy version, method `banner`)."""
    document = {
        "purposes": CAPTURES[variant],
        "policy_version": POLICY_VERSION,
        "method": "banner",
        "source": "web-banner",
    }
    return json.dumps(document, separators=(",", ":")).encode()


class ProtocolError(RuntimeError):
    """The server's response is not something this minimal client understands."""


def _body(status: str) -> bytes:
    return json.dumps({"status": status, "policy_version": POLICY_VERSION}).encode()


class RequestBuilder:
    """Pre-built request bytes for the APIs of one `host:port` (the development key unless
    `api_key` is given)."""

    def __init__(self, host: str, port: int, api_key: str = DEV_API_KEY) -> None:
        common = f"Host: {host}:{port}\r\nAuthorization: Bearer {api_key}\r\n"
        self._common = common.encode()
        self._put_tail: dict[str, bytes] = {}
        for status in ("given", "withdrawn"):
            body = _body(status)
            head = f"/consents/{PURPOSE} HTTP/1.1\r\n".encode() + self._common
            length = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            self._put_tail[status] = head + length.encode() + body
        self._capture_tail: list[bytes] = []
        for variant in (0, 1):
            body = capture_body(variant)
            head = b"/consents HTTP/1.1\r\n" + self._common
            length = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            self._capture_tail.append(head + length.encode() + body)

    def put_consent(self, subject: str, status: str) -> bytes:
        """`PUT /v1/subjects/{subject}/consents/performance` (subject must be URL-safe)."""
        return b"PUT /v1/subjects/" + subject.encode() + self._put_tail[status]

    def post_consents(self, subject: str, variant: int) -> bytes:
        """`POST /v1/subjects/{subject}/consents` with capture `variant` (URL-safe subject)."""
        return b"POST /v1/subjects/" + subject.encode() + self._capture_tail[variant]

    def check(self, subject: str, purpose: str) -> bytes:
        """`GET /v1/subjects/{subject}/checks/{purpose}` (URL-safe subject)."""
        return self.get(f"/v1/subjects/{subject}/checks/{purpose}")

    def get(self, target: str) -> bytes:
        """`GET target` (path and query, already encoded)."""
        return b"GET " + target.encode() + b" HTTP/1.1\r\n" + self._common + b"\r\n"

    def post(self, target: str, body: bytes) -> bytes:
        """`POST target` with a JSON `body` (target already encoded)."""
        return self._with_body(b"POST ", target, body)

    def _with_body(self, method: bytes, target: str, body: bytes) -> bytes:
        length = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        return method + target.encode() + b" HTTP/1.1\r\n" + self._common + length.encode() + body

    def post_json(self, target: str, document: Any) -> bytes:
        """`POST target` with `document` as its JSON body."""
        return self.post(target, json.dumps(document, separators=(",", ":")).encode())

    def put_json(self, target: str, document: Any) -> bytes:
        """`PUT target` with `document` as its JSON body."""
        body = json.dumps(document, separators=(",", ":")).encode()
        return self._with_body(b"PUT ", target, body)


class HttpConnection:
    """One keep-alive connection; reconnects transparently after the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one request and return (status, body); raises OSError/ProtocolError on failure."""
        now = time.monotonic()
        if self._writer is not None and now - self._last_used > MAX_IDLE_S:
            await self.close()
        self._last_used = now
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        try:
            self._writer.write(data)
            head = await self._reader.readuntil(b"\r\n\r\n")
            status, length, close = _parse_head(head)
            body = await self._reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await self.close()
            raise ProtocolError(f"truncated response: {exc!r}") from exc
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        self._last_used = time.monotonic()
        return status, body

    async def get_json(self, data: bytes) -> Any:
        """Send a request that must answer 200 and return its decoded JSON body."""
        status, body = await self.request(data)
        if status != 200:
            raise ProtocolError(f"HTTP {status}: {body[:300]!r}")
        return json.loads(body)

    async def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, server closes) from a response head."""
    if not head.startswith(b"HTTP/1.") or len(head) < 12:
        raise ProtocolError(f"not an HTTP/1.x response: {head[:80]!r}")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        if b"\r\ntransfer-encoding:" in lower:
            raise ProtocolError("chunked responses are not supported")
        return status, 0, True
    end = lower.index(b"\r\n", at + 2)
    length = int(lower[at + 17 : end])
    return status, length, b"\r\nconnection: close" in lower
