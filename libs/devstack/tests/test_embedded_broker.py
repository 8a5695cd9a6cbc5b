"""Embedded Tansu broker: start/stop, idempotent topic creation, produce and consume."""

from __future__ import annotations

import asyncio
import uuid

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consentry.devstack.broker import EmbeddedBroker, TopicSpec, create_topics, kafka_answers
from consentry.devstack.spawning import free_port


@pytest.mark.integration
def test_broker_starts_answers_and_stops() -> None:
    with EmbeddedBroker() as broker:
        host, port = broker.bootstrap.split(":")
        assert host == "127.0.0.1"
        assert kafka_answers(host, int(port))
        pid = broker.pid
        assert pid is not None
    assert not psutil.pid_exists(pid)
    assert not kafka_answers(host, int(port))


def test_kafka_answers_is_false_when_nobody_listens() -> None:
    assert not kafka_answers("127.0.0.1", free_port(), seconds=0.5)


@pytest.mark.integration
async def test_create_topics_is_idempotent(kafka_bootstrap: str) -> None:
    name = f"ct.{uuid.uuid4().hex[:8]}.v1"
    specs = [TopicSpec(name, partitions=3), TopicSpec(f"{name}.dlq", configs={"retention.ms": "1"})]
    await create_topics(kafka_bootstrap, specs)
    await create_topics(kafka_bootstrap, specs)  # existing topics are fine
    await create_topics(kafka_bootstrap, [])
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert {name, f"{name}.dlq"} <= set(await admin.list_topics())
        [described] = await admin.describe_topics([name])
        assert len(described["partitions"]) == 3
    finally:
        await admin.close()


@pytest.mark.integration
async def test_a_message_with_headers_round_trips(kafka_bootstrap: str) -> None:
    topic = f"ct.{uuid.uuid4().hex[:8]}.v1"
    await create_topics(kafka_bootstrap, [TopicSpec(topic, partitions=2)])
    headers = [("ce_id", b"e-1"), ("content-type", b"application/protobuf")]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"\x08\x01", key=b"subject-1", headers=headers)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, sent.partition)])
        record = await asyncio.wait_for(consumer.getone(), 10)
    finally:
        await consumer.stop()
    assert (record.key, record.value, record.offset) == (b"subject-1", b"\x08\x01", sent.offset)
    assert list(record.headers) == headers


@pytest.mark.integration
async def test_lose_everything_restarts_empty_on_the_same_address() -> None:
    with EmbeddedBroker() as broker:
        name = f"le.{uuid.uuid4().hex[:8]}.v1"
        await create_topics(broker.bootstrap, [TopicSpec(name, partitions=1)])
        old_pid = broker.pid
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            assert name in await admin.list_topics()
        finally:
            await admin.close()

        address = await asyncio.to_thread(broker.lose_everything)

        assert address == broker.bootstrap
        assert broker.pid != old_pid
        admin = AIOKafkaAdminClient(bootstrap_servers=address)
        await admin.start()
        try:
            assert name not in await admin.list_topics()
        finally:
            await admin.close()
