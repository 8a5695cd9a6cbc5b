"""The appender's batched path through the real broker: redeliveries appended once, a record
the database refuses dead-lettered alone, the rest of its batch appended, in order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from consentry.audit import worker
from consentry.audit.chain import checkpoints
from consentry.audit.chain.service import verify_tenant
from consentry.audit.settings import DEV_SIGNING_KEY, AppenderSettings, seed_bytes
from consentry.audit.v1 import audit_pb2
from consentry.devstack.broker import create_topics
from consentry.eventing import catalogue, kafka, topics
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import create_pool
from consentry.eventing.envelope import Event, encode
from consentry.eventing.testing import collect, consent_event, header
from consentry.eventing.topics import TopicSpec, dead_letter_topic

pytestmark = pytest.mark.integration
PARTITION = 4  # all of a test's records on one partition: they arrive in the same batches


async def send(bootstrap: str, records: Sequence[Event | tuple[bytes, bytes]]) -> None:
    """Produce events (or raw key/value pairs) in order onto one partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for item in records:
            if isinstance(item, Event):
                record = encode(item)
                await producer.send_and_wait(
                    record.topic,
                    record.value,
                    record.key,
                    partition=PARTITION,
                    headers=list(record.headers),
                )
            else:
                await producer.send_and_wait(topics.CONSENT, item[1], item[0], partition=PARTITION)
    finally:
        await producer.stop()


async def append_until(
    settings: AppenderSettings, tenant: uuid.UUID, entries: int
) -> EventConsumer:
    """Run the appender's consumer loop (as `run_appender` builds it) until the tenant's
    chain has `entries` entries."""
    pool = await create_pool(settings)
    signer = checkpoints.Signer.from_seed(seed_bytes(settings.audit_signing_key))
    async with pool.acquire() as conn:
        await checkpoints.register(conn, signer)
    checkpointer = worker.Checkpointer(pool, signer, every=1000, interval=10.0)
    consumer = kafka.consumer(settings, settings.appender_group_id, topics.CONSENT)
    producer = kafka.producer(settings)
    await consumer.start()
    await producer.start()
    loop = worker.appender(settings, consumer, producer, pool, checkpointer)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    query = "SELECT coalesce(max(seq), 0) FROM audit_entries WHERE tenant_id = $1"
    try:
        async with asyncio.timeout(30):
            while await pool.fetchval(query, tenant) < entries:
                assert not task.done(), task
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # anything appended twice would be now; offsets committed
    finally:
        stop.set()
        await task
        await consumer.stop()
        await producer.stop()
        await pool.close()
    return loop


async def test_redeliveries_append_once_and_a_refused_record_fails_alone(
    audit_db: str, db: asyncpg.Connection, kafka_bootstrap: str
) -> None:
    group = f"audit-test-{uuid.uuid4().hex[:8]}"
    await create_topics(
        kafka_bootstrap, [TopicSpec(topics.CONSENT), TopicSpec(dead_letter_topic(group), 1)]
    )
    settings = AppenderSettings(
        database_url=audit_db,
        kafka_bootstrap_servers=kafka_bootstrap,
        appender_group_id=group,
        audit_signing_key=SecretStr(DEV_SIGNING_KEY),
        environment="test",
    )
    tenant = uuid.uuid4()
    alice, bob = "a1" * 32, "b2" * 32
    good = [consent_event(str(tenant), alice, version) for version in (1, 2, 3)]
    good.append(consent_event(str(tenant), bob, 1))
    # The database refuses text with a NUL character: valid on the wire, poison in PostgreSQL.
    refused = consent_event(str(tenant), "nul\x00ref", 1)
    undecodable = (f"{tenant}/{alice}".encode(), b"\x08 not an event")
    await send(kafka_bootstrap, [good[0], good[1], good[1], refused, good[2], undecodable, good[3]])

    appender = await append_until(settings, tenant, len(good))

    rows = await db.fetch(
        "SELECT seq, event_id FROM audit_entries WHERE tenant_id = $1 ORDER BY seq", tenant
    )
    assert [(row["seq"], row["event_id"]) for row in rows] == [
        (seq, event.id) for seq, event in enumerate(good, start=1)
    ]
    assert appender.batch_fallbacks >= 1
    assert appender.duplicates >= 1
    dead = await collect(
        kafka_bootstrap,
        dead_letter_topic(group),
        lambda kept: len(kept) >= 2,
        keep=lambda r: (r.key or b"").startswith(str(tenant).encode()),
    )
    reasons = {header(r, "ce_id") or "no-id": header(r, "dlq.reason") for r in dead}
    assert reasons == {refused.id: "rejected-by-database", "no-id": "missing-headers"}
    assert not await db.fetchval(
        "SELECT count(*) FROM eventing_inbox WHERE event_id = $1", refused.id
    )
    published = await db.fetch(
        "SELECT payload FROM eventing_outbox WHERE event_type = $1 ORDER BY position",
        catalogue.AUDIT_ENTRY_APPENDED.name,
    )
    mine = [audit_pb2.EntryAppended.FromString(r["payload"]) for r in published]
    assert [m.seq for m in mine if m.tenant_id == str(tenant)] == [1, 2, 3, 4]

    # Redelivered in a later batch (and one new event): only the new one is appended.
    later = consent_event(str(tenant), bob, 2)
    await send(kafka_bootstrap, [good[0], good[3], later])
    await append_until(settings, tenant, len(good) + 1)
    rows = await db.fetch(
        "SELECT event_id FROM audit_entries WHERE tenant_id = $1 ORDER BY seq", tenant
    )
    assert [row["event_id"] for row in rows] == [event.id for event in [*good, later]]
    assert (await verify_tenant(db, tenant)).ok
