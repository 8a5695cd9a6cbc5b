"""Outbox and relay against a real PostgreSQL and the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from consentry.eventing import outbox, relay
from consentry.eventing.db import Connection
from consentry.eventing.envelope import decode
from consentry.eventing.relay import OutboxRelay, RelayOptions
from consentry.eventing.testing import collect, consent_event

pytestmark = pytest.mark.integration
TENANT = str(uuid.uuid4())


async def test_add_requires_the_callers_transaction(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the state change's transaction"):
            await outbox.add(conn, consent_event(TENANT, "s", 1))


async def test_rolled_back_transaction_leaves_no_outbox_row(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(ZeroDivisionError):
            async with conn.transaction():
                await outbox.add(conn, consent_event(TENANT, "s", 1))
                _ = 1 / 0
        assert await conn.fetchval("SELECT count(*) FROM eventing_outbox") == 0


async def test_relay_publishes_every_row_in_per_key_order_and_marks_it(
    pool: asyncpg.Pool, event_topics: str
) -> None:
    subjects = [uuid.uuid4().hex for _ in range(5)]
    expected: dict[str, list[str]] = defaultdict(list)

    async def write(subject: str) -> None:
        for version in range(1, 11):
            event = consent_event(TENANT, subject, version)
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add(conn, event)
            expected[subject].append(event.id)

    await asyncio.gather(*(write(subject) for subject in subjects))
    producer = AIOKafkaProducer(bootstrap_servers=event_topics, acks="all")
    await producer.start()
    try:
        async with pool.acquire() as conn:
            published = await relay.publish_pending(conn, producer, batch_size=1000)
            assert published == 50
            assert await relay.publish_pending(conn, producer, batch_size=1000) == 0
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM eventing_outbox WHERE published_at IS NULL"
                )
                == 0
            )
    finally:
        await producer.stop()

    wanted = {event_id for ids in expected.values() for event_id in ids}
    records = await collect(
        event_topics,
        "consentry.consent.v1",
        lambda kept: len(kept) >= 50,
        keep=lambda r: dict(r.headers or ()).get("ce_id", b"").decode() in wanted,
    )
    seen: dict[str, list[str]] = defaultdict(list)
    for record in records:
        event = decode(record.key, record.value, list(record.headers or ()))
        seen[event.subject_ref].append(event.id)
    assert seen == expected


async def test_replay_republishes_retained_rows(pool: asyncpg.Pool, event_topics: str) -> None:
    event = consent_event(TENANT, uuid.uuid4().hex, 1)
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, event)
    producer = AIOKafkaProducer(bootstrap_servers=event_topics, acks="all")
    await producer.start()
    try:
        async with pool.acquire() as conn:
            assert await relay.publish_pending(conn, producer, 100) == 1
            assert await relay.replay(conn, datetime.now(UTC) - timedelta(minutes=1)) == 1
            assert (await relay.backlog(conn))[0] == 1
            assert await relay.publish_pending(conn, producer, 100) == 1
    finally:
        await producer.stop()
    copies = await collect(
        event_topics,
        "consentry.consent.v1",
        lambda kept: len(kept) >= 2,
        keep=lambda r: dict(r.headers or ()).get("ce_id", b"").decode() == event.id,
    )
    assert len(copies) == 2


async def test_running_relay_wakes_on_commit_and_only_one_is_active(
    database: str, pool: asyncpg.Pool, event_topics: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=event_topics, acks="all")
    await producer.start()
    stop = asyncio.Event()
    # A long poll interval: only NOTIFY can make the relay publish quickly.
    options = RelayOptions(poll_interval=30.0)
    first, second = (
        OutboxRelay(database, producer, options),
        OutboxRelay(database, producer, options),
    )
    tasks = [asyncio.create_task(first.run(stop)), asyncio.create_task(second.run(stop))]
    try:
        await asyncio.sleep(0.5)  # both started; one leads, one stands by
        events = [consent_event(TENANT, uuid.uuid4().hex, 1) for _ in range(20)]
        for event in events:
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add(conn, event)
        async with asyncio.timeout(10):
            while first.published + second.published < len(events):
                await asyncio.sleep(0.05)
        assert sorted([first.published, second.published]) == [0, len(events)]
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await producer.stop()


async def test_relay_polls_when_no_notification_arrives(
    database: str, pool: asyncpg.Pool, event_topics: str
) -> None:
    await pool.execute("ALTER TABLE eventing_outbox DISABLE TRIGGER eventing_outbox_notify")
    producer = AIOKafkaProducer(bootstrap_servers=event_topics, acks="all")
    await producer.start()
    stop = asyncio.Event()
    relay_ = OutboxRelay(database, producer, RelayOptions(poll_interval=0.2))
    task = asyncio.create_task(relay_.run(stop))
    try:
        await asyncio.sleep(0.5)
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, consent_event(TENANT, uuid.uuid4().hex, 1))
        async with asyncio.timeout(10):
            while relay_.published < 1:
                await asyncio.sleep(0.05)
        assert (
            await pool.fetchval("SELECT count(*) FROM eventing_outbox WHERE published_at IS NULL")
            == 0
        )
    finally:
        stop.set()
        await task
        await producer.stop()


async def test_the_backlog_is_counted_through_the_index_of_unpublished_rows(
    pool: asyncpg.Pool,
) -> None:
    """Statistics taken during a burst say most rows are unpublished; most were published
    since. Counted plainly, PostgreSQL then reads the whole table; the relay's backlog
    reads only the index of unpublished rows."""
    events = [consent_event(TENANT, uuid.uuid4().hex, 1) for _ in range(5000)]
    async with pool.acquire() as conn:
        async with conn.transaction():
            await outbox.add_many(conn, events)
        await conn.execute("ANALYZE eventing_outbox")  # the burst: every row unpublished
        await conn.execute(
            "UPDATE eventing_outbox SET published_at = now() WHERE position % 1000 <> 0"
        )

    async def sequential_scans(count: Callable[[Connection], Awaitable[object]]) -> int:
        """The sequential scans of the outbox that `count` makes in a transaction (counted
        as a difference: the backend's scans not reported yet are in the view too)."""
        query = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'eventing_outbox'"
        async with pool.acquire() as conn, conn.transaction():
            before = await conn.fetchval(query)
            await count(conn)
            return int(await conn.fetchval(query)) - int(before)

    plainly = "SELECT count(*) FROM eventing_outbox WHERE published_at IS NULL"
    assert await sequential_scans(lambda conn: conn.fetchval(plainly)) == 1
    counted: list[tuple[int, float]] = []

    async def measure(conn: Connection) -> None:
        counted.append(await relay.backlog(conn))

    assert await sequential_scans(measure) == 0
    [(rows, age)] = counted
    assert rows == 5
    assert age >= 0
