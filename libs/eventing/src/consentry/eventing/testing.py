"""Helpers for tests that read what was published (used by the test-suites, not by services)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from consentry.consent.v1 import consent_pb2
from consentry.eventing import catalogue
from consentry.eventing.db import Connection
from consentry.eventing.envelope import Event, ReceivedEvent, decode

Record: TypeAlias = ConsumerRecord[bytes, bytes]


async def collect(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Record]], bool],
    *,
    keep: Callable[[Record], bool] = lambda _: True,
    seconds: float = 20.0,
) -> list[Record]:
    """Read `topic` from the earliest offset with a fresh group until `done(kept)` or timeout.

    Raises TimeoutError naming how many records were kept when `done` never became true.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    kept: list[Record] = []
    try:
        async with asyncio.timeout(seconds):
            while not done(kept):
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    kept.extend(record for record in records if keep(record))
    except TimeoutError:
        raise TimeoutError(
            f"{topic}: condition not met after {seconds}s, kept {len(kept)}"
        ) from None
    finally:
        await consumer.stop()
    return kept


def header(record: Record, name: str) -> str:
    """A record header's value as text ('' when absent)."""
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode()
    return ""


def consent_event(
    tenant_id: str,
    subject_ref: str,
    version: int,
    *,
    given: bool = True,
    purpose: str = "performance",
    source: str = "/consentry/test",
) -> Event:
    """A valid consent given/withdrawn event for tests."""
    decision = consent_pb2.ConsentDecision(
        tenant_id=tenant_id,
        subject_ref=subject_ref,
        purpose=purpose,
        policy_version="v1",
        subject_version=version,
    )
    message: consent_pb2.ConsentGiven | consent_pb2.ConsentWithdrawn
    if given:
        event_type, message = catalogue.CONSENT_GIVEN, consent_pb2.ConsentGiven(decision=decision)
    else:
        event_type = catalogue.CONSENT_WITHDRAWN
        message = consent_pb2.ConsentWithdrawn(decision=decision)
    return Event(event_type, tenant_id, subject_ref, message, source)


_OUTBOX = "SELECT message_key, headers, payload FROM eventing_outbox ORDER BY position"
_OUTBOX_OF_TYPES = """
SELECT message_key, headers, payload FROM eventing_outbox
WHERE event_type = ANY($1::text[]) ORDER BY position
"""


async def outbox_events(conn: Connection, *types: catalogue.EventType) -> list[ReceivedEvent]:
    """The events in a service database's outbox, decoded as a consumer would, in order
    (only those of `types` when given)."""
    if types:
        rows = await conn.fetch(_OUTBOX_OF_TYPES, [t.name for t in types])
    else:
        rows = await conn.fetch(_OUTBOX)
    return [
        decode(
            row["message_key"],
            row["payload"],
            [(name, value.encode()) for name, value in json.loads(row["headers"]).items()],
        )
        for row in rows
    ]
