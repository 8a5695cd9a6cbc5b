"""The notifier: a faust worker that turns erasure requests and consent withdrawals into
deliveries (docs/adr/0010-subprocessor-notifier.md), and answers rights requests for this
service.

One agent reads `consentry.rights.v1` (ErasureRequested, AccessRequested) and
`consentry.consent.v1` (ConsentWithdrawn) with raw serializers, in batches. Each batch is
applied in ONE PostgreSQL transaction, and in one savepoint: the inbox claims of all its
events in one statement, then the effects of those claimed now (`apply_tenant_events`: the
notices, their deliveries and RecipientsSelected through the outbox; for an erasure also
this service's ErasureCompleted, for an access request its sealed part of the export,
`rights/service.py`) a few statements per tenant, however many events there are. If the
database or an effect refuses that, the savepoint is rolled back and the batch is applied
record by record, a savepoint each. Records that cannot be decoded, or whose effect the
database refuses as invalid (or the effect rejects as poison), go to
`consentry.dlq.subprocessor-notifier` with the reason in headers, before the commit; other
event types on those topics are skipped. Only after the commit are the batch's events
acknowledged to faust, whose offset commits therefore never pass an event whose effect is
not durable: a crash re-reads it, and the inbox makes the repeat harmless. A transient
error (database or broker away) retries the same batch. Batches close when full or when
their oldest event has waited `notifier_batch_within` (`faust_kafka.linger_batches`). The
`sender` command, run next to the notifier, posts the deliveries (woken by the NOTIFY of
their commit); with `notifier_sender` a sender also runs in this process (an asyncio task),
and takes the new deliveries over in the transaction that makes them. After the commit each applied
event is observed in `consentry_propagation_seconds` (consumer `subprocessor-notifier`): the
time to the notice, not to the recipients' webhooks (those are the sender's
`consentry_webhook_*` metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer, ConsumerRecord

from consentry.eventing import catalogue, inbox, kafka, metrics, outbox, topics
from consentry.eventing.consumer import TRANSIENT_ERRORS, apply_claimed, send_dead_letter
from consentry.eventing.db import Connection, Pool, create_pool, set_tenant
from consentry.eventing.envelope import PoisonMessage, ReceivedEvent, decode, not_for
from consentry.eventing.faust_kafka import App, linger_batches
from consentry.eventing.logs import get_logger
from consentry.subprocessors.deliveries.models import Claimed
from consentry.subprocessors.deliveries.service import (
    NoticeOptions,
    erasure_notices,
    make_notices,
    withdrawal_notices,
)
from consentry.subprocessors.notifier.sender import Sender
from consentry.subprocessors.rights.service import answer_access, erasure_completed
from consentry.subprocessors.settings import NotifierSettings

log = get_logger(__name__)

# The inbox consumer name and dead-letter topic (`consentry.dlq.subprocessor-notifier`).
CONSUMER = "subprocessor-notifier"
INPUT_TOPICS = (topics.RIGHTS, topics.CONSENT)
# The event types with an effect here; others on those topics are skipped.
HANDLED = frozenset(
    {
        catalogue.ERASURE_REQUESTED.name,
        catalogue.ACCESS_REQUESTED.name,
        catalogue.CONSENT_WITHDRAWN.name,
    }
)


async def apply_tenant_events(
    conn: Connection, options: NoticeOptions, tenant_id: UUID, events: Sequence[ReceivedEvent]
) -> list[Claimed]:
    """The effects of `events` (of one tenant, claimed in the inbox, `HANDLED` types) in the
    caller's tenant-scoped transaction, in a few statements however many there are: the
    notices of erasures and withdrawals with their deliveries and RecipientsSelected, this
    service's ErasureCompleted per erasure, its access-export part per AccessRequested. The
    deliveries made."""
    erasures = [e for e in events if e.type.name == catalogue.ERASURE_REQUESTED.name]
    withdrawals = [e for e in events if e.type.name == catalogue.CONSENT_WITHDRAWN.name]
    made: list[Claimed] = []
    for event in events:
        if event.type.name == catalogue.ACCESS_REQUESTED.name:
            made.extend(await answer_access(conn, options, event))
    specs = [
        *await erasure_notices(conn, tenant_id, erasures),
        *await withdrawal_notices(conn, tenant_id, withdrawals),
    ]
    made.extend(await make_notices(conn, options, tenant_id, specs))
    await outbox.add_many(conn, [erasure_completed(event) for event in erasures])
    return made


def _record(message: Any) -> ConsumerRecord[bytes, bytes]:
    """A faust message as the aiokafka record the dead-letter helper takes."""
    headers = message.headers or ()
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    key, value = message.key, message.value
    return ConsumerRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=int((message.timestamp or 0) * 1000),
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=[(name, bytes(data)) for name, data in pairs if data is not None],
    )


class NoticeProcessor:
    """Applies batches of records: effects and inbox claims in one transaction, poison to
    the dead-letter topic, transient failures retried."""

    def __init__(
        self,
        pool: Pool,
        producer: AIOKafkaProducer,
        options: NoticeOptions,
        *,
        sender: Sender | None = None,
        lease_seconds: float = 60.0,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._options = options
        self._sender = sender
        self._lease_seconds = lease_seconds
        self.dead_letter_topic = topics.dead_letter_topic(CONSUMER)
        self.applied = 0
        self.skipped = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.deliveries = 0
        self.batch_fallbacks = 0

    async def process(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], stop: asyncio.Event
    ) -> bool:
        """Apply `records` (retrying transient failures); False when `stop` came first."""
        backoff = 0.2
        while not stop.is_set():
            # New deliveries go straight to this process's sender (claimed in the same
            # transaction) while it has room; otherwise any sender claims them when due.
            handing_over = self._sender is not None and self._sender.has_room()
            options = dataclasses.replace(
                self._options, lease_seconds=self._lease_seconds if handing_over else None
            )
            try:
                made = await self._apply(records, options)
            except TRANSIENT_ERRORS as exc:
                log.warning("notice batch failed; retrying", error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._sender is not None:
                self._sender.hand_over(made if handing_over else [])
            return True
        return False

    async def _apply(
        self, records: Sequence[ConsumerRecord[bytes, bytes]], options: NoticeOptions
    ) -> list[Claimed]:
        poison: list[tuple[ConsumerRecord[bytes, bytes], PoisonMessage]] = []
        decoded: list[tuple[ConsumerRecord[bytes, bytes], ReceivedEvent]] = []
        skipped = 0
        for record in records:
            headers = list(record.headers)
            if not_for(HANDLED, headers):  # another service's business: not even decoded
                skipped += 1
                continue
            try:  # (a record that decodes named its type in its headers: one of HANDLED)
                decoded.append((record, decode(record.key, record.value, headers)))
            except PoisonMessage as error:
                poison.append((record, error))
        self.skipped += skipped
        if not decoded and not poison:
            return []  # nothing here for the notifier: no transaction
        made: list[Claimed] = []
        applied: list[ReceivedEvent] = []
        undecodable = len(poison)
        async with self._pool.acquire() as conn, conn.transaction():
            if decoded:
                try:
                    applied = await apply_claimed(
                        conn,
                        CONSUMER,
                        [event for _, event in decoded],
                        lambda c, fresh: self._apply_fresh(c, options, fresh, made),
                    )
                except (PoisonMessage, asyncpg.PostgresError) as error:
                    # A deterministic refusal is isolated record by record (applied or
                    # dead-lettered); a transient error most likely fails there too and the
                    # batch is retried.
                    log.warning(
                        "notice batch refused; applying its records one by one",
                        error=type(error).__name__,
                    )
                    self.batch_fallbacks += 1
                    made.clear()
                    applied = await self._apply_each(conn, options, decoded, poison, made)
            # Dead letters are acknowledged before the effects commit: a crash in between
            # re-sends a dead letter (harmless) rather than losing one.
            for rejected, reason in poison:
                await self._dead_letter(rejected, reason)
        # Committed: the notices (and this service's answers) exist from now on.
        metrics.observe_propagation(CONSUMER, ((e.type.name, e.time) for e in applied))
        self.applied += len(applied)
        self.duplicates += len(decoded) - len(applied) - (len(poison) - undecodable)
        self.deliveries += len(made)
        return made

    async def _apply_fresh(
        self,
        conn: Connection,
        options: NoticeOptions,
        fresh: Sequence[ReceivedEvent],
        made: list[Claimed],
    ) -> None:
        """The batch path's effects: the events claimed now, a few statements per tenant."""
        by_tenant: dict[str, list[ReceivedEvent]] = {}
        for event in fresh:
            by_tenant.setdefault(event.tenant_id, []).append(event)
        for tenant, events in by_tenant.items():
            tenant_id = UUID(tenant)
            await set_tenant(conn, tenant_id)
            made.extend(await apply_tenant_events(conn, options, tenant_id, events))

    async def _apply_each(
        self,
        conn: Connection,
        options: NoticeOptions,
        decoded: Sequence[tuple[ConsumerRecord[bytes, bytes], ReceivedEvent]],
        poison: list[tuple[ConsumerRecord[bytes, bytes], PoisonMessage]],
        made: list[Claimed],
    ) -> list[ReceivedEvent]:
        """The per-record path: a savepoint per record for its claim and effect; the events
        applied."""
        applied: list[ReceivedEvent] = []
        for record, event in decoded:
            try:
                async with conn.transaction():  # savepoint: one record's claim + effect
                    if not await inbox.claim(conn, CONSUMER, event.id):
                        continue
                    tenant_id = UUID(event.tenant_id)
                    await set_tenant(conn, tenant_id)
                    made.extend(await apply_tenant_events(conn, options, tenant_id, [event]))
                    applied.append(event)
            except PoisonMessage as error:
                poison.append((record, error))
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
                # Deterministic: the same record would fail the same way on every retry.
                poison.append((record, PoisonMessage("rejected-by-database", type(error).__name__)))
        return applied

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: PoisonMessage
    ) -> None:
        await send_dead_letter(self._producer, CONSUMER, record, error)
        self.dead_lettered += 1


def build_app(
    settings: NotifierSettings,
    processor: NoticeProcessor,
    stop: asyncio.Event,
    datadir: str,
    failures: list[BaseException],
) -> App:
    """The faust app: one agent over the input topics, batches acknowledged after commit.

    A bug (an unexpected exception) is recorded in `failures` and stops the worker loudly
    instead of letting faust restart the agent past an unacknowledged batch."""
    session = settings.notifier_session_timeout
    app = App(
        settings.notifier_group_id,
        broker=[
            f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")
        ],
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        datadir=datadir,
        # Topics are created by the dev stack / deployment, never by the worker, and there
        # is no table: no leader topic, no changelog.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # Stopping does not wait for buffered events: unacknowledged, they are read again.
        stream_wait_empty=False,
        broker_client_id=f"{settings.kafka_client_id}-notifier",
        broker_commit_interval=settings.notifier_commit_interval,
        broker_session_timeout=session,
        broker_rebalance_timeout=session,
        broker_heartbeat_interval=min(3.0, session / 3),
        broker_request_timeout=max(settings.kafka_request_timeout_ms / 1000, session + 5),
        producer_acks=-1,
    )
    app.fetch_max_wait_ms = settings.notifier_fetch_max_wait_ms or settings.kafka_fetch_max_wait_ms
    app.fetch_min_bytes = settings.kafka_fetch_min_bytes
    source = app.topic(
        *INPUT_TOPICS,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def notify(stream: Any) -> None:
        # Nothing is acknowledged by faust itself: we ack after the commit. A batch closes
        # when full or when its oldest event has waited `notifier_batch_within`.
        async for events in linger_batches(
            stream, settings.notifier_batch_max, settings.notifier_batch_within
        ):
            records = [_record(event.message) for event in events]
            try:
                applied = await processor.process(records, stop)
            except Exception as exc:
                log.exception("notifier batch failed unexpectedly; stopping")
                failures.append(exc)
                stop.set()
                applied = False
            if not applied:
                await asyncio.Future()  # stopping: leave the batch unacknowledged
            for event in events:
                await stream.ack(event)

    app.agent(source, name="notifier", concurrency=1)(notify)
    return app


async def run_notifier(settings: NotifierSettings, stop: asyncio.Event) -> None:
    """The `notifier` command: make deliveries from events (and, with `notifier_sender`,
    post them) until `stop` is set."""
    pool = await create_pool(settings, stateless=True)
    producer = kafka.producer(settings, "-notifier-dlq")
    datadir = tempfile.mkdtemp(prefix="consentry-notifier-")
    sender = Sender(pool, settings) if settings.notifier_sender else None
    processor = NoticeProcessor(
        pool,
        producer,
        NoticeOptions(ack_url=settings.ack_url, window_seconds=settings.retry_window_seconds),
        sender=sender,
        lease_seconds=settings.lease_seconds,
    )
    failures: list[BaseException] = []
    app = build_app(settings, processor, stop, datadir, failures)
    sending: asyncio.Task[None] | None = None

    def sender_ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("sender failed; stopping", error=repr(task.exception()))
            failures.append(task.exception() or RuntimeError("sender failed"))
            stop.set()

    await producer.start()
    try:
        if sender is not None:
            sending = asyncio.create_task(sender.run(stop))
            sending.add_done_callback(sender_ended)
        await app.start()
        try:
            await stop.wait()
        finally:
            await app.stop()
    finally:
        stop.set()
        if sending is not None:
            with contextlib.suppress(Exception):  # already recorded in `failures`
                await sending
        await producer.stop()
        await pool.close()
        shutil.rmtree(datadir, ignore_errors=True)
    if failures:
        raise RuntimeError("the notifier stopped after a failure") from failures[0]
