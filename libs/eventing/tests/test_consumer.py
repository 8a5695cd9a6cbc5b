"""The consumer loop: effectively-once effects, dead letters, committed offsets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from consentry.eventing import catalogue, kafka
from consentry.eventing.consumer import BatchHandler, EventConsumer, Handler
from consentry.eventing.db import Connection
from consentry.eventing.envelope import ReceivedEvent, encode
from consentry.eventing.settings import KafkaSettings
from consentry.eventing.testing import collect, consent_event, header, produce

from .conftest import TEST_CONSUMER

pytestmark = pytest.mark.integration


async def effects_table(pool: asyncpg.Pool) -> None:
    await pool.execute("CREATE TABLE effects (event_id text, subject text, version bigint)")


_EFFECTS_OF = "SELECT count(*) FROM effects WHERE subject = $1"


async def record_effect(conn: Connection, event: ReceivedEvent) -> None:
    await conn.execute(
        "INSERT INTO effects VALUES ($1, $2, $3)",
        event.id,
        event.subject_ref,
        event.message.decision.subject_version,  # type: ignore[attr-defined]
    )


# What the consumers under test take, as the services that follow consent decisions do.
DECISIONS = (catalogue.CONSENT_GIVEN, catalogue.CONSENT_WITHDRAWN)


async def run_consumer(
    bootstrap: str,
    topic: str,
    pool: asyncpg.Pool,
    group: str,
    subject: str,
    until: int,
    *,
    handler: Handler = record_effect,
    batch_handler: BatchHandler | None = None,
    max_records: int | None = None,
    accepts: Collection[catalogue.EventType] = DECISIONS,
) -> EventConsumer:
    """Run an `EventConsumer` of `topic`, made as the services make theirs, until `until`
    effects of `subject` are recorded; stop it and its clients (also on failure)."""
    kafka_consumer = kafka.consumer(KafkaSettings(kafka_bootstrap_servers=bootstrap), group, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await kafka_consumer.start()
    await producer.start()
    consumer = EventConsumer(
        TEST_CONSUMER,
        kafka_consumer,
        producer,
        pool,
        handler,
        batch_handler=batch_handler,
        max_records=max_records,
        accepts=accepts,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        async with asyncio.timeout(20):
            while await pool.fetchval(_EFFECTS_OF, subject) < until:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # let the loop commit the offsets of what it applied
    finally:
        stop.set()
        try:
            await task
        finally:  # a failing handler must not leave the clients open for a later test
            await kafka_consumer.stop()
            await producer.stop()
    return consumer


async def test_applies_each_event_once_dead_letters_poison_and_keeps_going(
    pool: asyncpg.Pool, event_topics: str, consent_topic: str
) -> None:
    await effects_table(pool)
    tenant = str(uuid.uuid4())
    subject = uuid.uuid4().hex
    events = [consent_event(tenant, subject, version) for version in range(1, 6)]
    poison_key = f"{tenant}/{subject}".encode()
    # A duplicate delivery and two poison messages, mid-stream.
    await produce(
        event_topics,
        [
            *events[:2],
            events[1],
            (poison_key, b"not protobuf at all"),
            (poison_key, encode(events[1]).value, [("ce_type", b"consentry.consent.given.v1")]),
            *events[2:],
        ],
        topic=consent_topic,
    )

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = await run_consumer(
        event_topics, consent_topic, pool, group, subject, until=len(events)
    )

    rows = await pool.fetch(
        "SELECT event_id, version FROM effects WHERE subject = $1 ORDER BY version", subject
    )
    assert [row["event_id"] for row in rows] == [event.id for event in events]
    assert consumer.duplicates >= 1
    dead = await collect(
        event_topics,
        consumer.dead_letter_topic,
        lambda kept: len(kept) >= 2,
        keep=lambda r: r.key == poison_key,
    )
    assert sorted(header(r, "dlq.reason") for r in dead) == ["missing-headers", "missing-headers"]
    assert all(header(r, "dlq.consumer") == TEST_CONSUMER for r in dead)
    assert all(
        header(r, "dlq.topic") == consent_topic and header(r, "dlq.offset").isdigit() for r in dead
    )
    assert {r.value for r in dead} == {b"not protobuf at all", encode(events[1]).value}

    # The group committed its offsets: a restarted member applies nothing again.
    async with pool.acquire() as conn:
        claimed = await conn.fetchval(
            "SELECT count(*) FROM eventing_inbox WHERE consumer = $1", TEST_CONSUMER
        )
    assert claimed >= len(events)
    await produce(event_topics, [consent_event(tenant, subject, 6)], topic=consent_topic)
    await run_consumer(event_topics, consent_topic, pool, group, subject, until=len(events) + 1)
    assert await pool.fetchval(_EFFECTS_OF, subject) == len(events) + 1


async def test_an_effect_the_database_refuses_is_dead_lettered_not_retried_forever(
    pool: asyncpg.Pool, event_topics: str, consent_topic: str
) -> None:
    await effects_table(pool)
    await pool.execute("ALTER TABLE effects ADD CONSTRAINT no_version_3 CHECK (version <> 3)")
    tenant, subject = str(uuid.uuid4()), uuid.uuid4().hex
    events = [consent_event(tenant, subject, version) for version in range(1, 6)]
    await produce(event_topics, events, topic=consent_topic)

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = await run_consumer(event_topics, consent_topic, pool, group, subject, until=4)

    versions = await pool.fetch(
        "SELECT version FROM effects WHERE subject = $1 ORDER BY version", subject
    )
    assert [row["version"] for row in versions] == [1, 2, 4, 5]
    (dead,) = await collect(
        event_topics,
        consumer.dead_letter_topic,
        lambda kept: len(kept) >= 1,
        keep=lambda r: r.key == f"{tenant}/{subject}".encode(),
    )
    assert header(dead, "dlq.reason") == "rejected-by-database"
    assert header(dead, "dlq.detail") == "CheckViolationError"
    assert header(dead, "ce_id") == events[2].id
    # The refused event's inbox claim was rolled back with its savepoint.
    claimed = await pool.fetchval(
        "SELECT count(*) FROM eventing_inbox WHERE event_id = $1", events[2].id
    )
    assert claimed == 0
