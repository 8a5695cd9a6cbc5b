"""The event producer: captures through the real broker to the consent intake worker, across
a broker outage (a loopback TCP proxy the test keeps closed, then opens) and across a restart
of the producing process (the on-disk buffer)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest

from consentry.devstack.services import DEV_API_KEY, DEV_TENANT_ID
from consentry.devstack.stack import DevStack
from consentry.sdk import AsyncConsentry, SubjectNotFound
from consentry.sdk.producer import BufferFull, EventProducer

from .conftest import POLICY_VERSION

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.2)


class Proxy:
    """A TCP proxy on loopback to `target`, closed (connections refused) until `open()`."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._placeholder = socket.socket()  # bound, not listening: connections are refused
        self._placeholder.bind(("127.0.0.1", 0))
        self.port: int = self._placeholder.getsockname()[1]
        self._server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def open(self) -> None:
        self._placeholder.close()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        self._placeholder.close()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def client(consent_url: str) -> AsyncIterator[AsyncConsentry]:
    async with AsyncConsentry(DEV_API_KEY, consent_url=consent_url) as client:
        yield client


async def _applied(client: AsyncConsentry, subject_id: str, purpose: str) -> bool:
    try:
        return (await client.consents(subject_id)).status(purpose) == "given"
    except SubjectNotFound:
        return False


async def test_captures_survive_a_broker_outage(stack: DevStack, client: AsyncConsentry) -> None:
    subjects = [f"intake-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    refs = await client.subject_refs(subjects)
    proxy = Proxy(stack.bootstrap)
    producer = EventProducer(
        f"127.0.0.1:{proxy.port}", tenant_id=DEV_TENANT_ID, max_backoff=0.3, request_timeout=5
    )
    try:
        async with producer:
            ids = [
                await producer.capture(
                    ref, {"performance": "given"}, policy_version=POLICY_VERSION, source="sdk"
                )
                for ref in refs
            ]
            assert len(set(ids)) == len(ids)
            # The broker is unreachable: everything waits in the buffer.
            with pytest.raises(TimeoutError):
                await producer.flush(seconds=1.5)
            assert producer.pending == len(refs)
            assert producer.last_error is not None
            assert not await _applied(client, subjects[0], "performance")

            await proxy.open()  # the broker is back
            await producer.flush(seconds=30)
            assert producer.pending == 0
            for subject in subjects:
                await eventually(partial(_applied, client, subject, "performance"))

            # The same event id again (a retry by the caller): applied once.
            before = await client.proof(subjects[0])
            await producer.capture(
                refs[0], {"performance": "given"}, policy_version=POLICY_VERSION, event_id=ids[0]
            )
            marker = await producer.capture(
                refs[0], {"functionality": "given"}, policy_version=POLICY_VERSION
            )
            await producer.flush(seconds=30)
            await eventually(lambda: _applied(client, subjects[0], "functionality"))
            after = await client.proof(subjects[0])
            assert len(after.history) == len(before.history) + 1, marker
    finally:
        await proxy.close()


async def test_file_buffer_keeps_events_across_a_restart(
    stack: DevStack, client: AsyncConsentry, tmp_path: Path
) -> None:
    subject = f"intake-{uuid.uuid4().hex[:8]}"
    [ref] = await client.subject_refs([subject])
    buffer = tmp_path / "events.sqlite"
    unreachable = Proxy(stack.bootstrap)  # never opened
    first = EventProducer(
        f"127.0.0.1:{unreachable.port}",
        tenant_id=DEV_TENANT_ID,
        buffer_path=buffer,
        max_buffered=1,
        max_backoff=0.3,
    )
    first.start()
    await first.capture(ref, {"performance": "given"}, policy_version=POLICY_VERSION)
    with pytest.raises(BufferFull):
        await first.capture(ref, {"targeting": "given"}, policy_version=POLICY_VERSION)
    assert await first.close(seconds=0.5) == 1  # still unsent: kept on disk
    assert await first.close() == 1  # closing again changes nothing
    await unreachable.close()

    async with EventProducer(
        stack.bootstrap, tenant_id=DEV_TENANT_ID, buffer_path=buffer
    ) as second:
        await second.flush(seconds=30)
    await eventually(lambda: _applied(client, subject, "performance"))
    assert (await client.consents(subject)).status("targeting") is None
