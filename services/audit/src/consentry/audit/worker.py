"""The audit appender: consumes every event topic and appends each event to its chain.

An aiokafka consumer (not a faust agent): see docs/adr/0003-audit-appender-consumer.md.
"""

from __future__ import annotations

import asyncio

from consentry.audit.chain.service import append_event
from consentry.audit.settings import AppenderSettings
from consentry.eventing import kafka, topics
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import Connection, create_pool
from consentry.eventing.envelope import ReceivedEvent

# Every topic whose events the audit log records.
AUDITED_TOPICS = (topics.CONSENT,)


async def _append(conn: Connection, event: ReceivedEvent) -> None:
    await append_event(conn, event)


async def run_appender(settings: AppenderSettings, stop: asyncio.Event) -> None:
    """Append events to the audit chain until `stop` is set."""
    pool = await create_pool(settings)
    producer = kafka.producer(settings, "-audit-dlq")
    consumer = kafka.consumer(settings, settings.appender_group_id, *AUDITED_TOPICS)
    await producer.start()
    await consumer.start()
    try:
        appender = EventConsumer(settings.appender_group_id, consumer, producer, pool, _append)
        await appender.run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
