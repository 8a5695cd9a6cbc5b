"""`EventProducer`: consent captures from product code onto the intake topic (extra `events`).

Each `capture` becomes a `consentry.consent.capture_requested.v1` event
(`ConsentCaptureRequested`, protobuf) in CloudEvents binary mode, keyed `<tenant>/<subject_ref>`:
encoded by the platform's own codec (`consentry.eventing.envelope.encode`), so the consent
service's intake worker decodes exactly what was sent. The event id is fixed when the event is
captured (the caller's, or a new UUID) and kept on every resend: the intake applies an id once.

Every event first goes into a local buffer (SQLite: in memory by default, or a file that
survives a restart of the process) and a background task sends the buffer in order, deleting
what the broker acknowledged. While the broker is unreachable events wait there; the task
retries with backoff and sends them when it is back. The buffer is bounded (`max_buffered`):
`capture` raises `BufferFull` beyond it rather than losing an event silently.

Traces: an event carries the current OpenTelemetry trace (or `consentry.sdk.traced`'s) as
`ce_traceparent` / `ce_tracestate`, or the `traceparent` given to `capture`; the consent
service's events continue it and the audit entry records it.

`flush()` waits until the buffer is empty. `close()` flushes (up to its timeout), stops the
sender and returns how many events are still unsent: with a file buffer they are sent by the
next producer opened on the same file; with the in-memory buffer they are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consentry.consent.v1 import consent_pb2
from consentry.eventing import tracing
from consentry.eventing.catalogue import CONSENT_CAPTURE_REQUESTED
from consentry.eventing.envelope import Event, KafkaRecord, encode, to_timestamp
from consentry.sdk.models import Status

DEFAULT_SOURCE = "consentry-python-sdk"
_STATUSES = {
    "given": consent_pb2.CONSENT_STATUS_GIVEN,
    "withdrawn": consent_pb2.CONSENT_STATUS_WITHDRAWN,
}
_METHODS = {
    "api": consent_pb2.CONSENT_METHOD_API,
    "banner": consent_pb2.CONSENT_METHOD_BANNER,
    "preference-page": consent_pb2.CONSENT_METHOD_PREFERENCE_PAGE,
    "import": consent_pb2.CONSENT_METHOD_IMPORT,
    "gpc": consent_pb2.CONSENT_METHOD_GPC,
}
_SCHEMA = """
create table if not exists pending (
  seq integer primary key autoincrement,
  event_id text not null unique,
  topic text not null,
  key blob,
  value blob not null,
  headers text not null
)
"""


class BufferFull(RuntimeError):  # noqa: N818 - says what happened
    """The local buffer holds `max_buffered` unsent events: the event was not taken."""


class _Buffer:
    """Unsent records, oldest first, in SQLite (a file, or memory)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")
        self._db.execute(_SCHEMA)

    def __len__(self) -> int:
        (count,) = self._db.execute("select count(*) from pending").fetchone()
        return int(count)

    def add(self, event_id: str, record: KafkaRecord) -> None:
        headers = json.dumps([[name, value.hex()] for name, value in record.headers])
        self._db.execute(
            "insert or ignore into pending (event_id, topic, key, value, headers)"
            " values (?, ?, ?, ?, ?)",
            (event_id, record.topic, record.key, record.value, headers),
        )

    def oldest(self, limit: int) -> list[tuple[int, KafkaRecord]]:
        rows = self._db.execute(
            "select seq, topic, key, value, headers from pending order by seq limit ?", (limit,)
        ).fetchall()
        return [
            (
                seq,
                KafkaRecord(
                    topic=topic,
                    key=key,
                    value=value,
                    headers=tuple((name, bytes.fromhex(v)) for name, v in json.loads(headers)),
                ),
            )
            for seq, topic, key, value, headers in rows
        ]

    def delete_through(self, seq: int) -> None:
        self._db.execute("delete from pending where seq <= ?", (seq,))

    def close(self) -> None:
        self._db.close()


class EventProducer:
    """Sends consent captures to the intake topic, buffering them while the broker is away.

    ```python
    async with EventProducer("localhost:9092", tenant_id=tenant) as producer:
        await producer.capture(subject_ref, {"performance": "given"}, policy_version="2026-11")
    ```
    Subjects are named only by their pseudonymous `subject_ref` (`client.subject_refs(...)`).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        tenant_id: str,
        source: str = DEFAULT_SOURCE,
        buffer_path: str | Path = ":memory:",
        max_buffered: int = 100_000,
        batch_size: int = 500,
        request_timeout: float = 10.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self.tenant_id = str(uuid.UUID(tenant_id))
        self._source = source
        self._buffer = _Buffer(buffer_path)
        self._max_buffered = max_buffered
        self._batch_size = batch_size
        self._request_timeout_ms = int(request_timeout * 1000)
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._left: int | None = None  # set by close()
        self.last_error: Exception | None = None  # why the buffer is not draining, if it is not

    @property
    def pending(self) -> int:
        """Events captured and not yet acknowledged by the broker."""
        return len(self._buffer)

    def start(self) -> None:
        """Start the background sender (done by `async with`); needs a running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._wake.set()  # events left in a file buffer by an earlier producer

    async def capture(
        self,
        subject_ref: str,
        decisions: Mapping[str, Status],
        *,
        policy_version: str,
        method: str = "api",
        source: str | None = None,
        occurred_at: datetime | None = None,
        gpc: bool = False,
        age: int | None = None,
        event_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> str:
        """Buffer one capture of the subject's decisions (purpose -> given | withdrawn) and
        return its event id (`event_id`, or a new UUID): pass the same id to send the same
        capture again, the intake applies it once. Raises `BufferFull` when the buffer is.
        `traceparent` (W3C; `ValueError` if malformed) is the event's trace; by default, the
        current one."""
        if not decisions:
            raise ValueError("at least one decision is required")
        trace = tracing.parse(traceparent, tracestate) if traceparent else tracing.current()
        if traceparent and trace is None:
            raise ValueError("traceparent is not a W3C traceparent")
        message = consent_pb2.ConsentCaptureRequested(
            tenant_id=self.tenant_id,
            subject_ref=subject_ref,
            policy_version=policy_version,
            decisions=[
                consent_pb2.PurposeDecision(purpose=purpose, status=_STATUSES[status])
                for purpose, status in decisions.items()
            ],
            method=_METHODS[method],
            source=source or "",
            gpc=gpc,
        )
        if age is not None:
            message.age = age
        if occurred_at is not None:
            message.occurred_at.CopyFrom(to_timestamp(occurred_at))
        event = Event(
            type=CONSENT_CAPTURE_REQUESTED,
            tenant_id=self.tenant_id,
            subject_ref=subject_ref,
            message=message,
            source=self._source,
            id=event_id or str(uuid.uuid4()),
            traceparent=trace.traceparent if trace else None,
            tracestate=trace.tracestate if trace else None,
        )
        if len(self._buffer) >= self._max_buffered:
            raise BufferFull(f"{self._max_buffered} events are waiting for the broker")
        self._buffer.add(event.id, encode(event))
        self._idle.clear()
        self._wake.set()
        return event.id

    async def flush(self, seconds: float | None = None) -> None:
        """Wait until every buffered event is acknowledged (`TimeoutError` after `seconds`)."""
        self.start()
        async with asyncio.timeout(seconds):
            while self.pending:
                self._wake.set()
                self._idle.clear()
                await self._idle.wait()

    async def close(self, seconds: float = 10.0) -> int:
        """Flush for up to `seconds`, stop, and return the number of events left unsent
        (kept in a file buffer for the next producer on it; lost with the memory buffer).
        Closing a closed producer returns the same number again."""
        if self._left is not None:
            return self._left
        with contextlib.suppress(TimeoutError):
            await self.flush(seconds)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()
        self._left = self.pending
        self._buffer.close()
        return self._left

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _connect(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id=self._source,
                acks="all",
                request_timeout_ms=self._request_timeout_ms,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _disconnect(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()

    async def _send_batch(self) -> bool:
        """Send the oldest batch in order; delete it once acknowledged. False: nothing left."""
        batch = self._buffer.oldest(self._batch_size)
        if not batch:
            return False
        producer = await self._connect()
        futures = [
            await producer.send(
                record.topic, value=record.value, key=record.key, headers=list(record.headers)
            )
            for _, record in batch
        ]
        # Acknowledged in order: delete the acknowledged prefix. A failure after it leaves the
        # rest to be sent again (possibly twice: the same event ids, applied once).
        for (seq, _), future in zip(batch, futures, strict=True):
            await future
            self._buffer.delete_through(seq)
        return True

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self._send_batch():
                    pass
            except Exception as exc:  # unreachable broker, timeouts, ...: keep the events
                self.last_error = exc
                await self._disconnect()
                failures += 1
                delay = random.uniform(0, min(self._max_backoff, 0.1 * 2**failures))  # noqa: S311
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            failures, self.last_error = 0, None
            self._idle.set()
