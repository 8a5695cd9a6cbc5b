"""The consumer runs each event's effect under the event's trace: what a handler publishes
(through the outbox) continues it, and an untraced event leaves what it causes untraced."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from consentry.eventing import kafka, outbox, tracing
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import Connection
from consentry.eventing.envelope import ReceivedEvent
from consentry.eventing.settings import KafkaSettings
from consentry.eventing.testing import consent_event, produce

from .conftest import TEST_CONSUMER

pytestmark = pytest.mark.integration

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def publish_a_follow_up(conn: Connection, event: ReceivedEvent) -> None:
    """A handler with no tracing code of its own: it queues one event per event handled."""
    follow_up = consent_event(event.tenant_id, event.subject_ref, 1000, source="/follow-up")
    await outbox.add(conn, dataclasses.replace(follow_up, id=follow_up_id(event.id)))


def follow_up_id(event_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, event_id))


async def test_events_a_handler_publishes_continue_the_trace_of_the_event_it_handles(
    pool: asyncpg.Pool, event_topics: str, consent_topic: str
) -> None:
    tenant, subject = str(uuid.uuid4()), uuid.uuid4().hex
    traced = dataclasses.replace(consent_event(tenant, subject, 1), traceparent=TRACEPARENT)
    untraced = consent_event(tenant, subject, 2)
    assert untraced.traceparent is None
    await produce(event_topics, [traced, untraced], topic=consent_topic)

    kafka_consumer = kafka.consumer(
        KafkaSettings(kafka_bootstrap_servers=event_topics),
        f"g-{uuid.uuid4().hex[:8]}",
        consent_topic,
    )
    dead_letters = AIOKafkaProducer(bootstrap_servers=event_topics, acks="all")
    await kafka_consumer.start()
    await dead_letters.start()
    consumer = EventConsumer(TEST_CONSUMER, kafka_consumer, dead_letters, pool, publish_a_follow_up)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    query = "SELECT event_id::text, headers FROM eventing_outbox WHERE event_id = ANY($1::uuid[])"
    wanted = [follow_up_id(traced.id), follow_up_id(untraced.id)]
    try:
        async with asyncio.timeout(20):
            while len(rows := await pool.fetch(query, wanted)) < 2:
                await asyncio.sleep(0.05)  # polled: the consumer commits when it commits
    finally:
        stop.set()
        await task
        await kafka_consumer.stop()
        await dead_letters.stop()

    headers = {row["event_id"]: json.loads(row["headers"]) for row in rows}
    assert headers[follow_up_id(traced.id)][tracing.TRACEPARENT_HEADER] == TRACEPARENT
    assert tracing.TRACEPARENT_HEADER not in headers[follow_up_id(untraced.id)]
    # ... and the loop's own context stays clean between events.
    assert tracing.current() is None
