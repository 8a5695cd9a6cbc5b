"""A consumer whose broker lost the log under it re-reads the partition from its beginning.

The broker here is one the test owns (the embedded one, memory storage), whatever
`CONSENTRY_KAFKA_BOOTSTRAP_SERVERS` says: losing all data is what it does on a restart.
The consumer's partition is assigned by hand (a group id only to store offsets), so its
position stays where it was across the loss, as it does when a commit of the batch read
just before the loss lands on the group's new generation (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from consentry.devstack.broker import EmbeddedBroker, create_topics
from consentry.eventing import topics
from consentry.eventing.consumer import EventConsumer, LogLossGuard
from consentry.eventing.envelope import encode
from consentry.eventing.testing import consent_event
from consentry.eventing.topics import TopicSpec, dead_letter_topic

from .conftest import TEST_CONSUMER
from .test_consumer import effects_table, record_effect

pytestmark = pytest.mark.integration

PARTITION = TopicPartition(topics.CONSENT, 0)


class OwnBroker:
    """An embedded broker of the test's own, with its topics, that can lose everything."""

    def __init__(self) -> None:
        self._broker = EmbeddedBroker(port=0)
        self.bootstrap = ""

    async def start(self) -> None:
        self.bootstrap = await asyncio.to_thread(self._broker.start)
        await self._topics()

    async def lose_everything(self) -> None:
        assert await asyncio.to_thread(self._broker.lose_everything) == self.bootstrap
        await self._topics()

    async def stop(self) -> None:
        await asyncio.to_thread(self._broker.stop)

    async def _topics(self) -> None:
        await create_topics(
            self.bootstrap,
            [
                TopicSpec(topics.CONSENT, partitions=1),
                TopicSpec(dead_letter_topic(TEST_CONSUMER), partitions=1),
            ],
        )


@pytest_asyncio.fixture
async def broker() -> AsyncIterator[OwnBroker]:
    own = OwnBroker()
    await own.start()
    try:
        yield own
    finally:
        await own.stop()


async def publish(bootstrap: str, tenant: str, subjects: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for subject in subjects:
            record = encode(consent_event(tenant, subject, 1))
            await producer.send_and_wait(
                record.topic, record.value, record.key, headers=list(record.headers), partition=0
            )
    finally:
        await producer.stop()


async def applied(pool: asyncpg.Pool, subjects: list[str]) -> set[str]:
    rows = await pool.fetch("SELECT subject FROM effects WHERE subject = any($1)", subjects)
    return {row["subject"] for row in rows}


async def test_consumer_rereads_a_partition_whose_log_the_broker_lost(
    pool: asyncpg.Pool, broker: OwnBroker
) -> None:
    await effects_table(pool)
    tenant = str(uuid.uuid4())
    before = [uuid.uuid4().hex for _ in range(10)]
    after = [uuid.uuid4().hex for _ in range(3)]
    kafka_consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=f"log-loss-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await kafka_consumer.start()
    await producer.start()
    kafka_consumer.assign([PARTITION])
    consumer = EventConsumer(TEST_CONSUMER, kafka_consumer, producer, pool, record_effect)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await publish(broker.bootstrap, tenant, before)
        async with asyncio.timeout(30):
            while await applied(pool, before) != set(before):
                await asyncio.sleep(0.05)
        assert consumer.log_loss.rewinds == 0  # a healthy log is never re-read

        await broker.lose_everything()
        # The new log is shorter than the consumer's position (10): without the rewind the
        # consumer would wait at offset 10 and never apply these three.
        await publish(broker.bootstrap, tenant, after)
        async with asyncio.timeout(30):
            while await applied(pool, after) != set(after):
                await asyncio.sleep(0.05)
        assert consumer.log_loss.rewinds == 1
        assert consumer.applied == len(before) + len(after)
        assert await kafka_consumer.position(PARTITION) == len(after)
    finally:
        stop.set()
        await task
        await kafka_consumer.stop()
        await producer.stop()


def _record(tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, b"", None, 0, 0, [])


def test_guard_names_only_partitions_whose_log_ends_before_the_position() -> None:
    guard = LogLossGuard("unit")
    ok, lost, unread = (TopicPartition("t", n) for n in range(3))
    assert guard.lost({ok: 5, lost: 5, unread: 0}) == []  # nothing read yet: nothing known
    guard.read({ok: [_record(ok, 3), _record(ok, 4)], lost: [_record(lost, 6)], unread: []})
    assert guard.lost({ok: 5, lost: 6, unread: 0}) == [lost]
    assert guard.lost({ok: 5, lost: 6, unread: None}) == []  # lost is forgotten until read
    assert guard.lost({ok: None}) == []  # high watermark not known yet
    assert guard.lost({ok: 4}) == [ok]
    assert guard.rewinds == 2
