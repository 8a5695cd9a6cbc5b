"""The consumer loop's batch path: one claim and one handler call per batch, the same
exactly-once and dead-letter guarantees as the per-record path it falls back to."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from consentry.eventing import catalogue, kafka
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import Connection
from consentry.eventing.envelope import Event, ReceivedEvent
from consentry.eventing.settings import KafkaSettings
from consentry.eventing.testing import (
    RawRecord,
    Record,
    as_polled,
    collect,
    consent_event,
    header,
    produce,
)

from .conftest import TEST_CONSUMER
from .test_consumer import DECISIONS, run_consumer

pytestmark = pytest.mark.integration
PARTITION = 2  # every record of a test on one partition, so they share batches


def version_of(event: ReceivedEvent) -> int:
    return int(event.message.decision.subject_version)  # type: ignore[attr-defined]


class Effects:
    """Records what each path applied: per-record calls and batch calls."""

    def __init__(self) -> None:
        self.single: list[str] = []
        self.batches: list[list[str]] = []

    async def one(self, conn: Connection, event: ReceivedEvent) -> None:
        self.single.append(event.id)
        await conn.execute(
            "INSERT INTO effects VALUES ($1, $2, $3)",
            event.id,
            event.subject_ref,
            version_of(event),
        )

    async def many(self, conn: Connection, events: Sequence[ReceivedEvent]) -> None:
        self.batches.append([event.id for event in events])
        await conn.execute(
            "INSERT INTO effects SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])",
            [event.id for event in events],
            [event.subject_ref for event in events],
            [version_of(event) for event in events],
        )


async def send(bootstrap: str, topic: str, records: Sequence[Event | RawRecord]) -> None:
    """Produce events (or raw key/value pairs, with headers if given) in order onto one
    partition of `topic`."""
    await produce(bootstrap, records, topic=topic, partition=PARTITION)


async def consume(
    bootstrap: str,
    topic: str,
    pool: asyncpg.Pool,
    group: str,
    effects: Effects,
    subject: str,
    until: int,
    *,
    accepts: Sequence[catalogue.EventType] = DECISIONS,
) -> EventConsumer:
    """Run a batch-handling consumer until `until` effects of `subject` exist."""
    return await run_consumer(
        bootstrap,
        topic,
        pool,
        group,
        subject,
        until,
        handler=effects.one,
        batch_handler=effects.many,
        max_records=1000,
        accepts=accepts,
    )


async def dead_letter_of(bootstrap: str, consumer: EventConsumer, key: bytes | None) -> Record:
    """The one dead letter of `consumer` with message key `key`."""
    (dead,) = await collect(
        bootstrap,
        consumer.dead_letter_topic,
        lambda kept: len(kept) >= 1,
        keep=lambda r: r.key == key,
    )
    return dead


async def test_a_batch_is_claimed_and_applied_in_one_call_each_event_once(
    pool: asyncpg.Pool, event_topics: str, consent_topic: str
) -> None:
    await pool.execute("CREATE TABLE effects (event_id text, subject text, version bigint)")
    tenant, subject = str(uuid.uuid4()), uuid.uuid4().hex
    events = [consent_event(tenant, subject, version) for version in range(1, 7)]
    poison_key = f"{tenant}/{subject}".encode()
    # A duplicate delivery and an undecodable record in the middle of the batch.
    await send(
        event_topics,
        consent_topic,
        [*events[:3], events[1], (poison_key, b"\x00 not an event"), *events[3:]],
    )

    effects = Effects()
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = await consume(
        event_topics, consent_topic, pool, group, effects, subject, until=len(events)
    )

    rows = await pool.fetch(
        "SELECT event_id, version FROM effects WHERE subject = $1 ORDER BY version", subject
    )
    assert [row["event_id"] for row in rows] == [event.id for event in events]
    handed = [event_id for batch in effects.batches for event_id in batch]
    # Each to the batch handler once, the duplicate not, and never the per-record path.
    assert sorted(handed) == sorted(event.id for event in events)
    assert effects.single == []
    assert consumer.duplicates >= 1
    dead = await dead_letter_of(event_topics, consumer, poison_key)
    assert header(dead, "dlq.reason") == "missing-headers"
    claimed = await pool.fetchval(
        "SELECT count(*) FROM eventing_inbox WHERE event_id = ANY($1::text[])",
        [event.id for event in events],
    )
    assert claimed == len(events)

    # Redelivered later (a new batch): claimed already, applied no second time.
    later = consent_event(tenant, subject, 7)
    await send(event_topics, consent_topic, [events[0], events[4], later])
    await consume(event_topics, consent_topic, pool, group, effects, subject, until=len(events) + 1)
    versions = await pool.fetch(
        "SELECT version FROM effects WHERE subject = $1 ORDER BY version", subject
    )
    assert [row["version"] for row in versions] == list(range(1, 8))


async def test_a_record_the_database_refuses_fails_alone_via_the_per_record_path(
    pool: asyncpg.Pool, event_topics: str, consent_topic: str
) -> None:
    await pool.execute("CREATE TABLE effects (event_id text, subject text, version bigint)")
    await pool.execute("ALTER TABLE effects ADD CONSTRAINT no_version_3 CHECK (version <> 3)")
    tenant, subject = str(uuid.uuid4()), uuid.uuid4().hex
    events = [consent_event(tenant, subject, version) for version in range(1, 6)]
    await send(event_topics, consent_topic, events)

    effects = Effects()
    consumer = await consume(
        event_topics, consent_topic, pool, f"g-{uuid.uuid4().hex[:8]}", effects, subject, until=4
    )

    versions = await pool.fetch(
        "SELECT version FROM effects WHERE subject = $1 ORDER BY version", subject
    )
    assert [row["version"] for row in versions] == [1, 2, 4, 5]
    assert consumer.batch_fallbacks >= 1
    # The refused batch was applied again record by record: its other events too.
    (refused,) = [batch for batch in effects.batches if events[2].id in batch]
    assert set(refused) - {events[2].id} <= set(effects.single)
    assert events[2].id in effects.single  # tried alone, refused alone
    (dead,) = await collect(
        event_topics,
        consumer.dead_letter_topic,
        lambda kept: len(kept) >= 1,
        keep=lambda r: r.key == f"{tenant}/{subject}".encode(),
    )
    assert header(dead, "dlq.reason") == "rejected-by-database"
    assert header(dead, "dlq.detail") == "CheckViolationError"
    assert header(dead, "ce_id") == events[2].id
    # The batch's claims were rolled back with its savepoint; the refused one never kept one.
    claimed = await pool.fetch(
        "SELECT event_id FROM eventing_inbox WHERE event_id = ANY($1::text[])",
        [event.id for event in events],
    )
    assert {row["event_id"] for row in claimed} == {events[n].id for n in (0, 1, 3, 4)}


async def test_events_of_types_it_does_not_accept_are_passed_over_unread(
    pool: asyncpg.Pool, event_topics: str, consent_topic: str
) -> None:
    await pool.execute("CREATE TABLE effects (event_id text, subject text, version bigint)")
    tenant, subject = str(uuid.uuid4()), uuid.uuid4().hex
    key = f"{tenant}/{subject}".encode()
    given = [consent_event(tenant, subject, version) for version in (1, 3, 5)]
    withdrawn = [consent_event(tenant, subject, version, given=False) for version in (2, 4)]
    # A record that names a known type it does not accept, but is no event at all: not its
    # business, so not its dead letter either. One whose type its headers do not tell: poison.
    not_ours = (key, b"\x00 garbage", [("ce_type", catalogue.CONSENT_WITHDRAWN.name.encode())])
    unknown = (key, b"\x00 not an event")
    await send(
        event_topics,
        consent_topic,
        [given[0], withdrawn[0], not_ours, given[1], unknown, withdrawn[1], given[2]],
    )

    effects = Effects()
    consumer = await consume(
        event_topics,
        consent_topic,
        pool,
        f"g-{uuid.uuid4().hex[:8]}",
        effects,
        subject,
        until=len(given),
        accepts=[catalogue.CONSENT_GIVEN],
    )

    rows = await pool.fetch(
        "SELECT event_id FROM effects WHERE subject = $1 ORDER BY version", subject
    )
    assert [row["event_id"] for row in rows] == [event.id for event in given]
    assert consumer.skipped >= 3  # both withdrawals and the record that only names one
    claimed = await pool.fetch(
        "SELECT event_id FROM eventing_inbox WHERE event_id = ANY($1::text[])",
        [event.id for event in (*given, *withdrawn)],
    )
    assert {row["event_id"] for row in claimed} == {event.id for event in given}
    dead = await collect(
        event_topics,
        consumer.dead_letter_topic,
        lambda kept: any(header(r, "dlq.reason") == "missing-headers" for r in kept),
        keep=lambda r: r.key == key,
    )
    # Dead letters keep partition order: the record passed over would have come first.
    assert [header(r, "dlq.reason") for r in dead] == ["missing-headers"]


async def test_a_polls_partitions_are_applied_in_one_transaction_on_both_paths(
    pool: asyncpg.Pool, event_topics: str, consent_topic: str
) -> None:
    """What one poll returned from several partitions is applied in one transaction: one
    batch-handler call; refused, record by record, still in that one transaction, the
    refused record dead-lettered."""
    await pool.execute(
        "CREATE TABLE effects (event_id text, subject text, version bigint,"
        " tx bigint NOT NULL DEFAULT txid_current(), CHECK (version <> 3))"
    )
    tenant = str(uuid.uuid4())
    first = [consent_event(tenant, uuid.uuid4().hex, 1) for _ in range(3)]
    # The second poll: its middle record's effect is refused (version 3).
    second = [consent_event(tenant, uuid.uuid4().hex, version) for version in (1, 3, 2)]
    producer = AIOKafkaProducer(bootstrap_servers=event_topics, acks="all")
    kafka_consumer = kafka.consumer(
        KafkaSettings(kafka_bootstrap_servers=event_topics), "g-unused", consent_topic
    )
    await producer.start()
    effects = Effects()
    consumer = EventConsumer(
        TEST_CONSUMER, kafka_consumer, producer, pool, effects.one, batch_handler=effects.many
    )
    try:
        for events in (first, second):
            poll = {
                TopicPartition(consent_topic, partition): [
                    as_polled(event, partition=partition, offset=7)
                ]
                for partition, event in enumerate(events)
            }
            await consumer._process(poll)
    finally:
        await producer.stop()
        await kafka_consumer.stop()

    assert effects.batches[0] == [event.id for event in first]  # one call for three partitions
    rows = await pool.fetch("SELECT event_id, tx FROM effects")
    tx = {row["event_id"]: row["tx"] for row in rows}
    assert set(tx) == {first[0].id, first[1].id, first[2].id, second[0].id, second[2].id}
    assert len({tx[event.id] for event in first}) == 1
    assert consumer.batch_fallbacks == 1
    assert effects.single == [second[0].id, second[1].id, second[2].id]
    assert tx[second[0].id] == tx[second[2].id] != tx[first[0].id]
    dead = await dead_letter_of(event_topics, consumer, second[1].key)
    assert header(dead, "dlq.reason") == "rejected-by-database"
    assert header(dead, "dlq.partition") == "1"
