"""The audit appender: consumes every event topic, appends each event to its tenant's chain,
and signs checkpoints of each tenant's Merkle tree every N entries or T seconds.

An aiokafka consumer (not a faust agent): see docs/adr/0003-audit-appender-consumer.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consentry.audit.chain import checkpoints
from consentry.audit.chain.service import append_event, append_events
from consentry.audit.settings import AppenderSettings, seed_bytes
from consentry.eventing import kafka, topics
from consentry.eventing.consumer import TRANSIENT_ERRORS, EventConsumer
from consentry.eventing.db import Connection, Pool, create_pool
from consentry.eventing.envelope import ReceivedEvent
from consentry.eventing.logs import get_logger

# Every topic whose events the audit log records: consent and policy, preferences and
# unsubscribes, list suppressions, rights requests (erasure, access) and subprocessor
# deliveries and acknowledgements. Not the tenant directory (its events carry wrapped subject
# keys and key hashes, which an immutable log must not keep) nor the intake topic (captures
# are audited as the consent events they become).
AUDITED_TOPICS = (
    topics.CONSENT,
    topics.PREFERENCES,
    topics.LISTS,
    topics.RIGHTS,
    topics.SUBPROCESSOR,
)
log = get_logger(__name__)


class Checkpointer:
    """Signs checkpoints: at the end of each batch for the tenants it touched (every N
    entries), and on a timer for tenants with entries older than T and no checkpoint."""

    def __init__(
        self, pool: Pool, signer: checkpoints.Signer, *, every: int, interval: float
    ) -> None:
        self._pool = pool
        self._signer = signer
        self._every = every
        self._interval = timedelta(seconds=interval)

    async def after_batch(self, conn: Connection, events: Sequence[ReceivedEvent]) -> None:
        """Checkpoint the batch's tenants whose trees grew by N (inside the batch transaction).

        One query finds the due ones among the batch's tenants (whose heads this transaction
        holds), so a batch over many tenants costs one round trip, not one per tenant."""
        tenants = {UUID(event.tenant_id) for event in events}
        due = await checkpoints.due_tenants(
            conn, every=self._every, interval=self._interval, among=sorted(tenants)
        )
        for tenant in due:
            await checkpoints.checkpoint(
                conn, self._signer, tenant, every=self._every, interval=self._interval
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Checkpoint quiet tenants every so often until `stop` is set."""
        tick = min(self._interval.total_seconds(), 1.0)
        while not stop.is_set():
            try:
                async with self._pool.acquire() as conn:
                    due = await checkpoints.due_tenants(
                        conn, every=self._every, interval=self._interval
                    )
                    for tenant in due:
                        async with conn.transaction():
                            await checkpoints.checkpoint(
                                conn,
                                self._signer,
                                tenant,
                                every=self._every,
                                interval=self._interval,
                            )
            except TRANSIENT_ERRORS as exc:
                log.warning("checkpointing failed; retrying", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)


async def _append(conn: Connection, event: ReceivedEvent) -> None:
    await append_event(conn, event)


async def _append_batch(conn: Connection, received: Sequence[ReceivedEvent]) -> None:
    await append_events(conn, received)


def appender(
    settings: AppenderSettings,
    kafka_consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    pool: Pool,
    checkpointer: Checkpointer,
) -> EventConsumer:
    """The appender's consumer loop: each fetched partition batch appended with one
    audit_append_batch() call (per event when that is refused, or when batch append is off),
    checkpoints signed at the end of the batch's transaction."""
    return EventConsumer(
        settings.appender_group_id,
        kafka_consumer,
        producer,
        pool,
        _append,
        on_batch_end=checkpointer.after_batch,
        batch_handler=_append_batch if settings.appender_batch_append else None,
        max_records=settings.appender_max_records,
    )


async def run_appender(settings: AppenderSettings, stop: asyncio.Event) -> None:
    """Append events to the audit chain, and checkpoint it, until `stop` is set."""
    pool = await create_pool(settings)
    signer = checkpoints.Signer.from_seed(
        seed_bytes(settings.audit_signing_key), settings.audit_signing_key_id
    )
    async with pool.acquire() as conn:
        await checkpoints.register(conn, signer)
    checkpointer = Checkpointer(
        pool,
        signer,
        every=settings.audit_checkpoint_every,
        interval=settings.audit_checkpoint_interval_seconds,
    )
    producer = kafka.producer(settings, "-audit-dlq")
    consumer = kafka.consumer(settings, settings.appender_group_id, *AUDITED_TOPICS)
    await producer.start()
    await consumer.start()
    timer = asyncio.create_task(checkpointer.run(stop))
    try:
        await appender(settings, consumer, producer, pool, checkpointer).run(stop)
    finally:
        stop.set()
        await timer
        await consumer.stop()
        await producer.stop()
        await pool.close()
