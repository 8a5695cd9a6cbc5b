"""The audit appender: consumes every event topic, appends each event to its tenant's chain,
and signs checkpoints of each tenant's Merkle tree every N entries or T seconds.

An aiokafka consumer (not a faust agent): see docs/adr/0003-audit-appender-consumer.md; its
pipelined loop: consentry.audit.appender and docs/adr/0011-audit-appender-pipeline.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consentry.audit.appender import ChainAppender
from consentry.audit.chain import checkpoints
from consentry.audit.settings import AppenderSettings, seed_bytes
from consentry.eventing import kafka, topics
from consentry.eventing.consumer import TRANSIENT_ERRORS
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
    topics.RIGHTS_ANSWERS,
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
        """Checkpoint the batch's tenants whose trees grew by N (inside the batch transaction,
        which holds their heads): one query finds the due ones and their trees, and all of
        them are stored in two more, so a batch over many tenants costs at most three round
        trips, not three per tenant."""
        tenants = sorted(UUID(tenant) for tenant in {event.tenant_id for event in events})
        await checkpoints.checkpoint_held(
            conn, self._signer, tenants, every=self._every, interval=self._interval
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


def appender(
    settings: AppenderSettings,
    kafka_consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    pool: Pool,
    checkpointer: Checkpointer,
) -> ChainAppender:
    """The appender's consumer loop (`consentry.audit.appender`): each poll split by tenant
    into lanes, each lane's part appended with one audit_append_batch() call (record by record
    when that is refused, or when batch append is off) and its checkpoints signed at the end
    of its transaction; batches pipelined."""
    return ChainAppender(
        settings.appender_group_id,
        kafka_consumer,
        producer,
        pool,
        on_batch_end=checkpointer.after_batch,
        batch_append=settings.appender_batch_append,
        max_records=settings.appender_max_records,
        pipeline=settings.appender_pipeline,
        lanes=settings.appender_lanes,
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
    # Batches in flight keep thousands of objects alive long enough to reach the oldest
    # generation; frozen, what start-up made (modules, clients) is no longer walked by every
    # full collection (measured: about half the appender's GC time, ADR 0011).
    gc.freeze()
    timer = asyncio.create_task(checkpointer.run(stop))
    try:
        await appender(settings, consumer, producer, pool, checkpointer).run(stop)
    finally:
        stop.set()
        await timer
        await consumer.stop()
        await producer.stop()
        await pool.close()
