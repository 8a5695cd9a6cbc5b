"""The marketing-list processor: a faust worker that keeps list membership and the suppression
list from the preferences and consent topics (docs/adr/0009-list-processor.md).

One agent reads `consentry.preferences.v1` and `consentry.consent.v1` in batches
(`take_events`: up to `list_processor_batch_size` events, or what arrived within
`list_processor_batch_wait_ms`). Per batch, in ONE PostgreSQL transaction: the inbox rows of
the events that concern lists are claimed in one statement, the events claimed now are
applied (`service.apply_events`, a dozen multi-row statements), new suppressions go to the
outbox, and poison is dead-lettered to `consentry.dlq.list-processor` with the reason in
headers (before the commit: a crash re-sends a dead letter rather than losing one). faust
acknowledges the batch's events only when the agent asks for the next batch, i.e. after the
commit, and commits acknowledged offsets every `list_processor_commit_interval_ms`: a restart
re-reads at most that much, and the inbox drops what was applied already. Transient errors
(database or broker away, a deadlock) retry the batch with backoff; a batch the database
refuses as invalid data is applied event by event, and the event at fault is dead-lettered.
Once a batch commits, each event it applied is observed in `consentry_propagation_seconds`
(consumer: the processor's name), as `EventConsumer` does; dead letters are counted in
`consentry_dead_letters_total`.

faust is configured for a broker it does not own: no topic is declared (the dev stack and
the operator create them), no leader topic, no web server, memory store (no tables); the
fetch wait and minimum are ours (`kafka_fetch_max_wait_ms`, `kafka_fetch_min_bytes`), not
faust's fixed 1.5 s, which the development broker would hold every fetch for; and a
partition whose log the broker lost is re-read from its beginning
(`consentry.eventing.faust_kafka`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import cast

import asyncpg
import faust
from aiokafka import AIOKafkaProducer, ConsumerRecord
from faust.streams import Stream
from faust.types import EventT, StreamT

from consentry.eventing import kafka, metrics, topics
from consentry.eventing.consumer import TRANSIENT_ERRORS, send_dead_letter
from consentry.eventing.db import Connection, Pool, create_pool
from consentry.eventing.envelope import PoisonMessage, ReceivedEvent, decode
from consentry.eventing.faust_kafka import App
from consentry.eventing.logs import get_logger
from consentry.preferences.lists import service
from consentry.preferences.settings import ListProcessorSettings

log = get_logger(__name__)
SOURCE_TOPICS = (topics.PREFERENCES, topics.CONSENT)
Ev = EventT[bytes]
STOP_TIMEOUT_S = 15.0

# `inbox.claim` for a batch in one statement (as EventConsumer's batch path).
_CLAIM_MANY = """
INSERT INTO eventing_inbox (consumer, event_id)
SELECT $1, event_id FROM unnest($2::text[]) AS event_id
ON CONFLICT DO NOTHING
RETURNING event_id
"""
# Batches range from one event to thousands: plan each statement for its arrays. A generic
# plan (what PostgreSQL caches for a prepared statement after a few runs) assumes a few
# elements, and was measured 5x slower on batches of a thousand.
_CUSTOM_PLANS = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"
# Deterministic refusals: the same event fails the same way on every retry.
_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


def faust_app(settings: ListProcessorSettings, datadir: str) -> App:
    """The processor's faust app (no agent yet); faust keeps its files in `datadir` (never
    the working directory)."""
    seconds = settings.list_processor_session_timeout_ms / 1000
    app = App(
        settings.list_processor_name,  # the consumer group
        broker=[
            f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")
        ],
        broker_client_id=f"{settings.kafka_client_id}-{settings.list_processor_name}",
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        autodiscover=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",  # the development broker answers `latest` wrongly
        broker_session_timeout=seconds,
        broker_rebalance_timeout=seconds,
        broker_heartbeat_interval=max(1.0, seconds / 5),
        broker_commit_interval=settings.list_processor_commit_interval_ms / 1000,
        stream_wait_empty=False,  # unacknowledged events are simply read again after a restart
        producer_acks=-1,
    )
    app.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
    app.fetch_min_bytes = settings.list_processor_fetch_min_bytes or settings.kafka_fetch_min_bytes
    return app


def _headers(headers: object) -> list[tuple[str, bytes | None]]:
    """A faust message's headers as (name, value) pairs, duplicates kept (decode refuses
    them)."""
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(cast("Sequence[tuple[str, bytes | None]]", headers or ()))


def _record(event: Ev) -> ConsumerRecord[bytes, bytes]:
    """The Kafka record behind a faust event, as `send_dead_letter` takes it."""
    message = event.message
    return ConsumerRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=int(message.timestamp * 1000),
        timestamp_type=message.timestamp_type,
        key=message.key,
        value=message.value,
        checksum=message.checksum,
        serialized_key_size=message.serialized_key_size,
        serialized_value_size=message.serialized_value_size,
        headers=tuple(_headers(message.headers)),
    )


class ListProcessor:
    """Applies batches of events to the lists, effectively once (see the module docstring)."""

    def __init__(
        self, settings: ListProcessorSettings, pool: Pool, producer: AIOKafkaProducer
    ) -> None:
        self.name = settings.list_processor_name
        self.lag_log_seconds = settings.list_processor_lag_log_seconds
        self.dead_letter_topic = topics.dead_letter_topic(self.name)
        self._settings = settings
        self._pool = pool
        self._producer = producer
        self.stop = asyncio.Event()
        self.failure: BaseException | None = None
        self.applied = 0
        self.duplicates = 0
        self.ignored = 0
        self.stale = 0
        self.suppressed = 0
        self.dead_lettered = 0
        self.batches = 0
        self.busy_s = 0.0  # time spent applying batches (the rest is waiting for events)
        self._next: dict[tuple[str, int], int] = {}  # per partition: next offset to process
        self.datadir = tempfile.mkdtemp(prefix=f"consentry-{self.name}-")
        self.app = faust_app(settings, self.datadir)
        source = self.app.topic(*SOURCE_TOPICS, key_type=bytes, value_type=bytes)
        self.app.agent(source, name=self.name)(self._agent)

    async def _agent(self, stream: StreamT[bytes]) -> None:
        wait = self._settings.list_processor_batch_wait_ms / 1000
        batches = cast("Stream[bytes]", stream).take_events(
            self._settings.list_processor_batch_size, wait
        )
        async for events in batches:
            try:
                await self.process(events)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # a bug: stop the worker loudly, acknowledge nothing
                log.exception("list processor failed", consumer=self.name)
                self.failure = exc
                self.stop.set()
                await asyncio.Event().wait()  # never acknowledge this batch

    async def process(self, events: Sequence[Ev]) -> None:
        """Apply one batch; returns once it is committed (the caller then acknowledges it)."""
        started = time.perf_counter()
        poison: list[tuple[Ev, PoisonMessage]] = []
        relevant: list[tuple[Ev, ReceivedEvent]] = []
        for event in events:
            message = event.message
            try:
                decoded = decode(message.key, message.value, _headers(message.headers))
                if service.change_of(decoded) is None:
                    self.ignored += 1
                else:
                    relevant.append((event, decoded))
            except PoisonMessage as error:
                poison.append((event, error))
        backoff = 0.2
        while relevant or poison:
            try:
                fresh, outcome, refused = await self._transaction(relevant, poison)
                self.applied += fresh - refused
                self.duplicates += len(relevant) - fresh
                self.stale += outcome.stale
                self.suppressed += outcome.suppressed
                self.dead_lettered += len(poison) + refused
                break
            except TRANSIENT_ERRORS as exc:
                if self.stop.is_set():
                    raise
                log.warning("batch failed; retrying", consumer=self.name, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self.batches += 1
        self.busy_s += time.perf_counter() - started
        for event in events:
            message = event.message
            self._next[(message.topic, message.partition)] = message.offset + 1

    async def _transaction(
        self,
        relevant: Sequence[tuple[Ev, ReceivedEvent]],
        poison: Sequence[tuple[Ev, PoisonMessage]],
    ) -> tuple[int, service.Applied, int]:
        """One batch in one transaction: (events claimed now, what they did, how many of
        them the database refused)."""
        outcome = service.Applied()
        refused: list[tuple[Ev, PoisonMessage]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_CUSTOM_PLANS)
            fresh = await self._claim(conn, relevant)
            if fresh:
                try:
                    async with conn.transaction():  # savepoint: the whole batch at once
                        outcome = await service.apply_events(conn, [e for _, e in fresh])
                except _REFUSED as refusal:
                    log.warning(
                        "batch refused; applying its events one by one",
                        consumer=self.name,
                        error=type(refusal).__name__,
                    )
                    outcome, refused = await self._apply_each(conn, fresh)
            # Dead letters are acknowledged before the effects commit (see the docstring).
            rejected = sorted([*poison, *refused], key=lambda item: item[0].message.offset)
            for event, reason in rejected:
                await self._dead_letter(event, reason)
        # Committed: the lists (and the suppressions' outbox rows) show these events now.
        refused_ids = {id(event) for event, _ in refused}
        metrics.observe_propagation(
            self.name,
            ((e.type.name, e.time) for event, e in fresh if id(event) not in refused_ids),
        )
        return len(fresh), outcome, len(refused)

    async def _claim(
        self, conn: Connection, relevant: Sequence[tuple[Ev, ReceivedEvent]]
    ) -> list[tuple[Ev, ReceivedEvent]]:
        """The events not applied before (each id once, in stream order)."""
        if not relevant:
            return []
        rows = await conn.fetch(_CLAIM_MANY, self.name, [e.id for _, e in relevant])
        claimed = {row["event_id"] for row in rows}
        fresh = []
        for event, decoded in relevant:
            if decoded.id in claimed:
                claimed.discard(decoded.id)
                fresh.append((event, decoded))
        return fresh

    async def _apply_each(
        self, conn: Connection, fresh: Sequence[tuple[Ev, ReceivedEvent]]
    ) -> tuple[service.Applied, list[tuple[Ev, PoisonMessage]]]:
        """The fallback: one savepoint per event; the refused ones are returned as poison."""
        total = service.Applied()
        refused = []
        for event, decoded in fresh:
            try:
                async with conn.transaction():
                    outcome = await service.apply_events(conn, [decoded])
                total.stale += outcome.stale
                total.suppressed += outcome.suppressed
            except _REFUSED as error:
                refused.append((event, PoisonMessage("rejected-by-database", type(error).__name__)))
        return total, refused

    async def _dead_letter(self, event: Ev, error: PoisonMessage) -> None:
        await send_dead_letter(self._producer, self.name, _record(event), error)

    def lag(self) -> int:
        """Records behind the high-water mark on the partitions processed so far (the
        high-water mark of the last fetch: reliable on every broker, unlike end_offsets)."""
        behind = 0
        for (topic, partition), following in self._next.items():
            with contextlib.suppress(Exception):  # the partition may have moved away
                tp = faust.types.TP(topic, partition)
                behind += max(0, self.app.consumer.highwater(tp) - following)
        return behind

    def stats(self) -> dict[str, int | float]:
        """Counters since the start (logged with the lag)."""
        return {
            "busy_s": round(self.busy_s, 3),
            "batches": self.batches,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "ignored": self.ignored,
            "stale": self.stale,
            "suppressed": self.suppressed,
            "dead_lettered": self.dead_lettered,
        }


async def run_list_processor(settings: ListProcessorSettings, stop: asyncio.Event) -> None:
    """Keep the marketing lists until `stop` is set (the worker shape of `add_worker`)."""
    for noisy in ("faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.getLogger().level, logging.WARNING))
    pool = await create_pool(settings)
    producer = kafka.producer(settings, f"-{settings.list_processor_name}-dlq")
    await producer.start()
    processor = ListProcessor(settings, pool, producer)
    try:
        await processor.app.start()
        log.info("list processor started", consumer=processor.name, topics=SOURCE_TOPICS)
        await _until_stopped(processor, stop)
    finally:
        # Bounded: with the broker gone, faust's and aiokafka's stops can wait for ever;
        # nothing is lost by giving up (offsets not committed are read again).
        for closing in (processor.app.stop(), producer.stop(), pool.close()):
            try:
                await asyncio.wait_for(closing, STOP_TIMEOUT_S)
            except Exception as exc:  # shutting down anyway: log and go on
                log.warning("list processor stop incomplete", error=repr(exc))
        shutil.rmtree(processor.datadir, ignore_errors=True)
        log.info("list processor stopped", consumer=processor.name, **processor.stats())
    if processor.failure is not None:
        raise processor.failure


async def _until_stopped(processor: ListProcessor, stop: asyncio.Event) -> None:
    """Wait for `stop` (or a failure), logging lag and counters now and then."""
    last = time.monotonic()
    while not stop.is_set() and not processor.stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()
        if time.monotonic() - last >= processor.lag_log_seconds:
            last = time.monotonic()
            log.info("list processor lag", lag=processor.lag(), **processor.stats())
