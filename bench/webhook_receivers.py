"""Local webhook recipients for the benchmarks: each request verified with `standardwebhooks`.

`Receivers` is an ASGI app that serves the endpoints `/r/<n>` of several recipients (recipient
n's secret verifies what arrives at `/r/<n>`), records every webhook it got (`Receipt`) and
answers the way docs/webhooks.md lets a recipient acknowledge at once: 200 with the body
`{"acknowledged":true}` signed with its own secret under the notice's webhook-id (or a bare
204 with `ack=False`, or when the notice did not verify). `serve` runs it on a loopback port
with uvicorn inside the benchmark's own process; one server per recipient, since recipients
are different hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import uvicorn
from standardwebhooks import Webhook

from bench.audit import BenchError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Receipt:
    """One webhook a receiver got."""

    at: float  # time.time() when its request reached the receiver
    recipient: int
    webhook_id: str
    request_id: str
    verified: bool


class Receivers:
    """The recipients' endpoints (`/r/<n>`), an ASGI app served by uvicorn in this process."""

    def __init__(self, secrets_: list[str], ack: bool) -> None:
        self._hooks = [Webhook(secret) for secret in secrets_]
        self._ack = ack
        self.receipts: list[Receipt] = []
        self.malformed = 0

    @property
    def recipients(self) -> int:
        """How many recipients the app serves."""
        return len(self._hooks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Verify, record, answer (a signed acknowledgement, or 204)."""
        if scope["type"] != "http":
            return
        at = time.time()
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            recipient = int(scope["path"].rsplit("/", 1)[1])
            hook = self._hooks[recipient]
        except (ValueError, IndexError):
            self.malformed += 1
            await _answer(send, 404, b"", [])
            return
        try:
            notice = hook.verify(body, headers)
            verified = True
        except Exception:
            notice, verified = json.loads(body), False
        message_id = headers.get("webhook-id", "")
        self.receipts.append(
            Receipt(at, recipient, message_id, str(notice.get("request_id", "")), verified)
        )
        if not self._ack or not verified:
            await _answer(send, 204, b"", [])
            return
        answer = b'{"acknowledged":true}'
        now = datetime.now(UTC)
        await _answer(
            send,
            200,
            answer,
            [
                (b"content-type", b"application/json"),
                (b"webhook-id", message_id.encode()),
                (b"webhook-timestamp", str(int(now.timestamp())).encode()),
                (b"webhook-signature", hook.sign(message_id, now, answer.decode()).encode()),
            ],
        )

    def arrived(self, requests: Collection[str]) -> int:
        """How many (request, recipient) pairs of `requests` got at least one webhook."""
        return len({(r.request_id, r.recipient) for r in self.receipts if r.request_id in requests})

    def first_receipts(self, requests: Collection[str]) -> dict[tuple[str, int], Receipt]:
        """The first webhook per (request, recipient) of `requests`."""
        first: dict[tuple[str, int], Receipt] = {}
        for receipt in sorted(self.receipts, key=lambda r: r.at):
            if receipt.request_id in requests:
                first.setdefault((receipt.request_id, receipt.recipient), receipt)
        return first

    def repeats(self, requests: Collection[str]) -> int:
        """Webhooks beyond the first per (request, recipient) of `requests`."""
        counts = Counter(
            (r.request_id, r.recipient) for r in self.receipts if r.request_id in requests
        )
        return sum(n - 1 for n in counts.values() if n > 1)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serve(app: Receivers, port: int) -> AsyncIterator[None]:
    """The receivers on 127.0.0.1:`port` until the block ends (one server per recipient:
    recipients are different hosts)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise BenchError("the receivers did not start")
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await task
