"""The SDK sends the current W3C trace: as HTTP headers from the clients, as
`ce_traceparent` from the event producer; `traced` names one for code without OpenTelemetry."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace

from consentry.sdk import AsyncConsentry, Consentry, traced
from consentry.sdk.producer import EventProducer

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ANSWER = {"allowed": True, "reason": "given"}


def recording_transport(seen: list[httpx.Headers]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json=ANSWER)

    return httpx.MockTransport(answer)


def test_the_sync_client_sends_the_current_trace_and_none_outside_one() -> None:
    seen: list[httpx.Headers] = []
    with Consentry("key", transport=recording_transport(seen)) as api:
        with traced(TRACEPARENT, "congo=t61"):
            api.check("alice", "performance")
        api.check("alice", "performance")
    assert seen[0]["traceparent"] == TRACEPARENT
    assert seen[0]["tracestate"] == "congo=t61"
    assert "traceparent" not in seen[1]
    assert not trace.get_current_span().get_span_context().is_valid  # the block restored it


async def test_the_async_client_sends_the_current_trace_unless_its_headers_name_one() -> None:
    seen: list[httpx.Headers] = []
    transport = recording_transport(seen)
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with AsyncConsentry("key", transport=transport) as api:
        with traced(TRACEPARENT):
            await api.check("alice", "performance")
    async with AsyncConsentry(
        "key",
        transport=transport,
        headers={"traceparent": own},
    ) as api:
        with traced(TRACEPARENT):
            await api.check("alice", "performance")
    assert [headers["traceparent"] for headers in seen] == [TRACEPARENT, own]


@pytest.mark.parametrize("bad", ["", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"])
def test_traced_refuses_what_is_not_a_traceparent(bad: str) -> None:
    with pytest.raises(ValueError, match="traceparent"), traced(bad):
        pass


def buffered_headers(path: Path) -> list[dict[str, bytes]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("select headers from pending order by seq").fetchall()
    return [{name: bytes.fromhex(value) for name, value in json.loads(row[0])} for row in rows]


async def test_the_producer_puts_the_trace_on_the_event(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    producer = EventProducer("127.0.0.1:9", tenant_id=str(uuid.uuid4()), buffer_path=path)
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with traced(TRACEPARENT):
        await producer.capture("ab" * 32, {"performance": "given"}, policy_version="v1")
        await producer.capture(
            "ab" * 32, {"performance": "given"}, policy_version="v1", traceparent=other
        )
    await producer.capture("ab" * 32, {"performance": "given"}, policy_version="v1")
    with pytest.raises(ValueError, match="traceparent"):
        await producer.capture(
            "ab" * 32, {"performance": "given"}, policy_version="v1", traceparent="nonsense"
        )
    assert await producer.close(seconds=0) == 3  # no broker there: kept in the file
    headers = buffered_headers(path)
    assert [h.get("ce_traceparent") for h in headers] == [
        TRACEPARENT.encode(),
        other.encode(),
        None,
    ]
