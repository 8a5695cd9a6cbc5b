"""The appender's batched path through the real broker: redeliveries appended once, a record
the database refuses dead-lettered alone, the rest of its batch appended, in order."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from consentry.audit import worker
from consentry.audit.appender import ChainAppender, lane_of
from consentry.audit.chain import checkpoints
from consentry.audit.chain.service import verify_tenant
from consentry.audit.settings import DEV_SIGNING_KEY, AppenderSettings, seed_bytes
from consentry.audit.v1 import audit_pb2
from consentry.devstack.broker import create_topics
from consentry.eventing import catalogue, kafka, metrics, topics
from consentry.eventing.db import Connection, Pool, create_pool
from consentry.eventing.envelope import Event, ReceivedEvent, encode
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


async def appender_settings(audit_db: str, bootstrap: str, **settings: int) -> AppenderSettings:
    """The appender's settings with a consumer group of its own (and its dead-letter topic)."""
    group = f"audit-test-{uuid.uuid4().hex[:8]}"
    await create_topics(
        bootstrap, [TopicSpec(topics.CONSENT), TopicSpec(dead_letter_topic(group), 1)]
    )
    return AppenderSettings(
        database_url=audit_db,
        kafka_bootstrap_servers=bootstrap,
        appender_group_id=group,
        audit_signing_key=SecretStr(DEV_SIGNING_KEY),
        environment="test",
    ).model_copy(update=settings)


def default_checkpointer(pool: Pool, signer: checkpoints.Signer) -> worker.Checkpointer:
    return worker.Checkpointer(pool, signer, every=1000, interval=10.0)


async def append_until(
    settings: AppenderSettings,
    tenant: uuid.UUID | Sequence[uuid.UUID],
    entries: int,
    checkpointer: Callable[[Pool, checkpoints.Signer], worker.Checkpointer] | None = None,
) -> ChainAppender:
    """Run the appender's consumer loop (as `run_appender` builds it) until the tenants'
    chains have `entries` entries."""
    tenants = [tenant] if isinstance(tenant, uuid.UUID) else list(tenant)
    pool = await create_pool(settings)
    signer = checkpoints.Signer.from_seed(seed_bytes(settings.audit_signing_key))
    async with pool.acquire() as conn:
        await checkpoints.register(conn, signer)
    hook = (checkpointer or default_checkpointer)(pool, signer)
    consumer = kafka.consumer(settings, settings.appender_group_id, topics.CONSENT)
    producer = kafka.producer(settings)
    await consumer.start()
    await producer.start()
    loop = worker.appender(settings, consumer, producer, pool, hook)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    query = "SELECT count(*) FROM audit_entries WHERE tenant_id = ANY($1::uuid[])"
    try:
        async with asyncio.timeout(30):
            while await pool.fetchval(query, tenants) < entries:
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
    settings = await appender_settings(audit_db, kafka_bootstrap)
    group = settings.appender_group_id
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
    # The metrics, as EventConsumer's. The group reads the topic from its start, where other
    # tests' poison without headers may lie too: that reason counts at least this test's one.
    counted = {
        reason: metrics.REGISTRY.get_sample_value(
            "consentry_dead_letters_total", {"consumer": group, "reason": reason}
        )
        for reason in ("rejected-by-database", "missing-headers")
    }
    assert counted["rejected-by-database"] == 1
    assert (counted["missing-headers"] or 0) >= 1
    sample = {"consumer": group, "kind": "consent"}
    observed = metrics.REGISTRY.get_sample_value("consentry_propagation_seconds_count", sample)
    assert observed == appender.applied >= len(good)
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


# Backends waiting for a lock this transaction holds: the next append of its lane.
_WAITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
)


class FailsOnceWhilePipelined(worker.Checkpointer):
    """Fails a transaction once, transiently, at its end, as soon as the next append of its
    lane waits on its chain heads (it is an error if that never happens)."""

    def __init__(self, pool: Pool, signer: checkpoints.Signer, tenants: set[str]) -> None:
        super().__init__(pool, signer, every=1000, interval=10.0)
        self.tenants = tenants  # the test's (the topic holds other tests' events too)
        self.failed = False

    async def after_batch(self, conn: Connection, events: Sequence[ReceivedEvent]) -> None:
        if not self.failed and self.tenants.intersection(e.tenant_id for e in events):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    while not await conn.fetchval(_WAITING):
                        await asyncio.sleep(0.01)
                    self.failed = True
                    raise ConnectionResetError("injected: the connection broke before the commit")
        await super().after_batch(conn, events)


@pytest.mark.parametrize("lanes", [1, 2])
async def test_pipelined_batches_keep_partition_order_and_retry_in_order(
    audit_db: str, db: asyncpg.Connection, kafka_bootstrap: str, lanes: int
) -> None:
    settings = await appender_settings(
        audit_db, kafka_bootstrap, appender_max_records=4, appender_pipeline=3, appender_lanes=lanes
    )
    # Two tenants in each lane: a lane's next append often waits on the previous one's heads.
    tenants: list[uuid.UUID] = []
    while len(tenants) < 4:
        tenant = uuid.uuid4()
        if sum(lane_of(str(t), lanes) == lane_of(str(tenant), lanes) for t in tenants) < 4 / lanes:
            tenants.append(tenant)
    sent = [
        consent_event(str(tenants[n % 4]), f"{n % 5:02x}" * 32, n // 5 + 1, given=n % 2 == 0)
        for n in range(60)
    ]
    await send(kafka_bootstrap, sent)

    hooks: list[FailsOnceWhilePipelined] = []

    def failing(pool: Pool, signer: checkpoints.Signer) -> FailsOnceWhilePipelined:
        hooks.append(FailsOnceWhilePipelined(pool, signer, {str(t) for t in tenants}))
        return hooks[-1]

    appender = await append_until(settings, tenants, len(sent), failing)

    assert hooks[0].failed
    # Counted once, after the commit (the topic may hold other tests' events too).
    assert appender.applied == await db.fetchval("SELECT count(*) FROM audit_entries")
    for tenant in tenants:
        rows = await db.fetch(
            "SELECT seq, event_id FROM audit_entries WHERE tenant_id = $1 ORDER BY seq", tenant
        )
        mine = [event.id for event in sent if event.tenant_id == str(tenant)]
        assert [(row["seq"], row["event_id"]) for row in rows] == list(enumerate(mine, start=1))
        assert (await verify_tenant(db, tenant)).ok
    published = await db.fetch(
        "SELECT payload FROM eventing_outbox WHERE event_type = $1 ORDER BY position",
        catalogue.AUDIT_ENTRY_APPENDED.name,
    )
    appended = [audit_pb2.EntryAppended.FromString(row["payload"]) for row in published]
    for tenant in tenants:  # one EntryAppended per entry, in chain order
        seqs = [message.seq for message in appended if message.tenant_id == str(tenant)]
        assert seqs == list(range(1, 16))
