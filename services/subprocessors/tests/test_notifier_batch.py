"""The notifier's batch path: a batch of many events is applied in a few statements per
tenant, with the same effects as one event at a time; a batch the database refuses is
applied record by record, the refused record dead-lettered and the rest applied."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import httpx
import pytest_asyncio
from aiokafka import ConsumerRecord

from consentry.eventing import catalogue, kafka
from consentry.eventing.db import create_pool
from consentry.eventing.envelope import Event
from consentry.eventing.testing import as_polled
from consentry.subprocessors.deliveries.service import NoticeOptions
from consentry.subprocessors.notifier.worker import NoticeProcessor
from consentry.subprocessors.settings import NotifierSettings

from .conftest import (
    consent_withdrawn,
    erasure_requested,
    provision_tenant,
    published,
    register,
)


def _records(events: Sequence[Event]) -> list[ConsumerRecord[bytes, bytes]]:
    """The events as the notifier's agent hands them over (offsets in order)."""
    return [as_polled(event, partition=0, offset=offset) for offset, event in enumerate(events)]


@pytest_asyncio.fixture
async def processor(notifier_settings: NotifierSettings) -> AsyncIterator[NoticeProcessor]:
    """A processor without a sender (deliveries stay due in the database)."""
    pool = await create_pool(notifier_settings, stateless=True)
    producer = kafka.producer(notifier_settings, "-test-dlq")
    await producer.start()
    try:
        yield NoticeProcessor(
            pool,
            producer,
            NoticeOptions(ack_url="http://ack.invalid/v1/acknowledgements", window_seconds=60),
        )
    finally:
        await producer.stop()
        await pool.close()


async def _count(db: asyncpg.Connection, table: str, tenant: uuid.UUID) -> int:
    value: int = await db.fetchval(
        f"SELECT count(*) FROM {table} WHERE tenant_id = $1",
        tenant,
    )
    return value


async def test_a_batch_of_many_tenants_and_kinds_is_applied_in_one_go(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    processor: NoticeProcessor,
) -> None:
    await register(client, "pay", "http://127.0.0.1:9/pay")
    await register(
        client, "ads", "http://127.0.0.1:9/ads", role="affiliate", purposes=["targeting"]
    )
    other = uuid.uuid4()  # a tenant without recipients
    await provision_tenant(db, other)
    erasures = [erasure_requested(tenant, request_id="req-batch") for _ in range(20)]
    withdrawals = [consent_withdrawn(tenant, "targeting") for _ in range(5)]
    unconcerned = [consent_withdrawn(tenant, "performance") for _ in range(2)]
    elsewhere = [erasure_requested(other, request_id="req-other") for _ in range(3)]
    batch = [*erasures[:10], *elsewhere, *withdrawals, *unconcerned, *erasures[10:]]
    batch.append(erasures[0])  # the same event twice in one batch: applied once

    assert await processor.process(_records(batch), asyncio.Event())

    assert processor.batch_fallbacks == 0
    assert (processor.applied, processor.duplicates) == (30, 1)
    assert processor.deliveries == 20 * 2 + 5
    assert await _count(db, "notices", tenant) == 25
    assert await _count(db, "deliveries", tenant) == 45
    assert await _count(db, "notices", other) == 3
    assert await _count(db, "deliveries", other) == 0
    ads_deliveries = await db.fetchval(
        "SELECT count(*) FROM deliveries d JOIN recipients r ON r.id = d.recipient_id"
        " WHERE d.tenant_id = $1 AND r.name = 'ads'",
        tenant,
    )
    assert ads_deliveries == 20 + 5
    # Every delivery carries its own notice's subject, and each notice its recipients.
    mismatched = await db.fetchval(
        "SELECT count(*) FROM deliveries d JOIN notices n ON n.id = d.notice_id"
        " WHERE d.tenant_id = $1 AND (d.payload::jsonb ->> 'subject_ref' <> n.subject_ref"
        " OR NOT d.recipient_id = ANY (n.recipient_ids))",
        tenant,
    )
    assert mismatched == 0
    selected = await published(db, tenant, catalogue.RECIPIENTS_SELECTED)
    assert len(selected) == 25  # none for the withdrawals nobody receives data for
    assert len(await published(db, other, catalogue.RECIPIENTS_SELECTED)) == 3
    completed = await published(db, tenant, catalogue.ERASURE_COMPLETED)
    assert sorted(e.subject_ref for e in completed) == sorted(e.subject_ref for e in erasures)
    assert len(await published(db, other, catalogue.ERASURE_COMPLETED)) == 3

    # Redelivered (a crash before faust's offset commit): nothing is made twice.
    assert await processor.process(_records(batch), asyncio.Event())
    assert (processor.applied, processor.duplicates) == (30, 1 + len(batch))
    assert await _count(db, "deliveries", tenant) == 45
    assert len(await published(db, tenant, catalogue.ERASURE_COMPLETED)) == 20


async def test_a_refused_batch_is_applied_record_by_record(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    processor: NoticeProcessor,
) -> None:
    await register(client, "pay", "http://127.0.0.1:9/pay")
    good = [erasure_requested(tenant, request_id="req-good") for _ in range(4)]
    refused = erasure_requested(tenant, subject_ref="f" * 300)  # longer than a subject ref
    batch = [*good[:2], refused, *good[2:]]

    assert await processor.process(_records(batch), asyncio.Event())

    assert processor.batch_fallbacks == 1
    assert (processor.applied, processor.dead_lettered, processor.duplicates) == (4, 1, 0)
    assert await _count(db, "notices", tenant) == 4
    assert await _count(db, "deliveries", tenant) == 4
    completed = await published(db, tenant, catalogue.ERASURE_COMPLETED)
    assert sorted(e.subject_ref for e in completed) == sorted(e.subject_ref for e in good)
    claimed = await db.fetchval(
        "SELECT count(*) FROM eventing_inbox WHERE consumer = 'subprocessor-notifier'"
        " AND event_id = $1",
        refused.id,
    )
    assert claimed == 0  # not claimed: a fixed build may apply it from the dead letters
