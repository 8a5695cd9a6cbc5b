"""Helpers of the marketing-list tests (no tests here): events as the preferences and consent
services publish them, a producer, the processor as a real process, and polling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer

from consentry.devstack.broker import TopicSpec, create_topics
from consentry.eventing import topics
from consentry.eventing.envelope import (
    Event,
    KafkaRecord,
    ReceivedEvent,
    decode,
    encode,
    utcnow,
)
from consentry.eventing.testing import consent_event
from consentry.preferences.subjects import events as preference_events
from consentry.preferences.subjects.models import Method

T = TypeVar("T")


def new_ref() -> str:
    """A random subject reference (64 hex)."""
    return secrets.token_hex(32)


def new_topic() -> str:
    """A topic name no other test uses (tests share the broker's topics)."""
    return f"news-{secrets.token_hex(4)}"


def joined(
    tenant: uuid.UUID,
    ref: str,
    version: int,
    pairs: Sequence[tuple[str, str]],
    *,
    subscribed: bool = True,
    category: str = "marketing",
) -> Event:
    """`preferences.updated` with (topic, channel) pairs subscribed (or left)."""
    return preference_events.updated(
        tenant_id=tenant,
        subject_ref=ref,
        version=version,
        changes=[(topic, channel, subscribed, category) for topic, channel in pairs],
        method=Method.API,
        at=utcnow(),
    )


def unsubscribed(
    tenant: uuid.UUID,
    ref: str,
    version: int,
    topic: str | None = None,
    channels: Sequence[str] = (),
) -> Event:
    """`preferences.unsubscribed` from a topic (None: all marketing)."""
    return preference_events.unsubscribed(
        tenant_id=tenant,
        subject_ref=ref,
        version=version,
        topic=topic,
        channels=channels,
        method=Method.ONE_CLICK,
        at=utcnow(),
    )


def consent(tenant: uuid.UUID, ref: str, version: int, *, given: bool) -> Event:
    """A `marketing-email` decision as the consent service publishes it."""
    return consent_event(
        str(tenant),
        ref,
        version,
        given=given,
        purpose="marketing-email",
        source="/consentry/consent",
    )


def received(events: Iterable[Event]) -> list[ReceivedEvent]:
    """Events as a consumer receives them (encoded and decoded again)."""
    out = []
    for event in events:
        record = encode(event)
        out.append(decode(record.key, record.value, list(record.headers)))
    return out


async def ensure_topics(bootstrap: str, *extra: str) -> None:
    """The processor's source topics (and `extra`, e.g. its dead-letter topic)."""
    await create_topics(
        bootstrap,
        [TopicSpec(name) for name in (topics.PREFERENCES, topics.CONSENT, topics.LISTS, *extra)],
    )


async def produce(bootstrap: str, records: Iterable[Event | KafkaRecord]) -> None:
    """Put events (or raw records) on their topics, in order, acks=all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = []
        for item in records:
            record = encode(item) if isinstance(item, Event) else item
            future = await producer.send(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
            sent.append(future)
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    seconds: float = 60.0,
    interval: float = 0.1,
) -> T:
    """Poll `probe` until `done(value)`; fail with the last value after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met after {seconds}s; last value: {value!r}")
        await asyncio.sleep(interval)


class Processor:
    """`python -m consentry.preferences list-processor` as a child process (the real thing,
    so a test can SIGKILL it)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def name(self) -> str:
        """The processor's consumer group / inbox consumer / dead-letter name."""
        return self.env["CONSENTRY_LIST_PROCESSOR_NAME"]

    def start(self) -> None:
        """Start it (its output is appended to `log`)."""
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consentry.preferences", "list-processor"],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no offset commit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def alive(self) -> bool:
        """Still running?"""
        return self.proc is not None and self.proc.poll() is None

    def log_lines(self) -> Iterator[dict[str, object]]:
        """Its JSON log lines (other output skipped)."""
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                document = json.loads(line)
                if isinstance(document, dict):
                    yield document


def processor_env(app_dsn: str, bootstrap: str, name: str) -> dict[str, str]:
    """The environment of a processor for one test: its own group, inbox name and DLQ."""
    return {
        "CONSENTRY_DATABASE_URL": app_dsn,
        "CONSENTRY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CONSENTRY_ENVIRONMENT": "test",
        "CONSENTRY_LOG_FORMAT": "json",
        "CONSENTRY_LIST_PROCESSOR_NAME": name,
        "CONSENTRY_LIST_PROCESSOR_SESSION_TIMEOUT_MS": "3000",
        "CONSENTRY_LIST_PROCESSOR_LAG_LOG_SECONDS": "1",
    }


async def fetch_as_tenant(
    conn: asyncpg.Connection, tenant: uuid.UUID, query: str, *args: object
) -> list[asyncpg.Record]:
    """Run a read as the tenant (RLS scoped) in its own transaction."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('consentry.tenant_id', $1, true)", str(tenant))
        return list(await conn.fetch(query, *args))
