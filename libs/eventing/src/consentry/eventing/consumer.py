"""A Kafka consumer loop that applies events effectively once and dead-letters poison.

For each poll (the records of every partition it returned) the loop opens one database
transaction; every record gets a savepoint in which `inbox.claim` and the handler's effect
run together. A record that cannot be decoded, that the handler rejects with
`PoisonMessage`, or whose effect the database refuses as invalid data (a data or integrity
error: it would fail the same way on every retry) is rolled back to its savepoint and sent
to the consumer's dead-letter topic with the reason in headers, in its partition's order;
the partition keeps moving. The transaction commits, and only then the Kafka offsets. A
transient error (database or broker unreachable, a deadlock) rolls the poll back and retries
the same records with backoff: nothing is skipped, and redelivery is harmless because of
the inbox. Any other exception is a bug: it stops the consumer loudly. (A transaction per
partition cost a commit and a round of statements for each: a poll of the rights tracker
spreads over the 18 partitions of its three topics.)

With a `batch_handler` the records of a poll are applied in one go instead: all are
decoded first (poison set aside as above), the inbox rows of the decoded ones are claimed in
one statement inside a savepoint, and the handler gets the events claimed now (each event id
once, each partition's in its order) in that same savepoint. If the database refuses any of
it, or the handler raises `PoisonMessage`, the savepoint is rolled back and the poll goes
through the per-record path above, which applies the good records and dead-letters the one
at fault. Exactly-once, ordering and dead-lettering are therefore the same on both paths.

A consumer that acts on only some of the event types of its topics says which (`accepts`):
a record whose `ce_type` header names another known type is passed over before it is
decoded, with no transaction and no inbox row (the rights tracker reads the requests on
`consentry.rights.v1` for the answers published there before ADR 0014, and passes them
over). It is not this consumer's to dead-letter either:
the consumers that act on that type do. A record whose type cannot be told from its headers
is decoded, and dead-lettered if it is unusable, as before.

Traces (`consentry.eventing.tracing`): on the per-record path each record's claim and effect
run in a consumer span whose parent is the event's `traceparent` (a non-recording span that
is that parent when no OpenTelemetry SDK is configured), so every event the handler builds
continues the trace of the event it handles. A `batch_handler` gets many events in one call,
so the consumer cannot make one of them current: a batch handler that publishes events wraps
the building of each in `tracing.continuing(event)`; events it builds outside one carry no
trace.

A partition whose log the broker lost under the consumer (its high watermark now below the
next offset to read) is re-read from its beginning (`LogLossGuard.poll`, before each
fetch): the development broker answers such a fetch with no records instead of Kafka's
OFFSET_OUT_OF_RANGE, and the consumer would otherwise skip what is written below its old
position.

Metrics (`consentry.eventing.metrics`): once a batch's transaction commits, each event applied
in it observes `consentry_propagation_seconds` (now - the event's CloudEvents time); each dead
letter counts in `consentry_dead_letters_total`; after each batch `consentry_consumer_lag` is
the partition's high watermark minus the next offset to read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consentry.eventing import inbox, metrics, tracing
from consentry.eventing.catalogue import EventType
from consentry.eventing.db import Connection, Pool
from consentry.eventing.envelope import PoisonMessage, ReceivedEvent, decode, not_for, utcnow
from consentry.eventing.logs import get_logger
from consentry.eventing.topics import dead_letter_topic

log = get_logger(__name__)

Handler = Callable[[Connection, ReceivedEvent], Awaitable[None]]
# Runs at the end of a batch's transaction with the events applied in it.
BatchHook = Callable[[Connection, Sequence[ReceivedEvent]], Awaitable[None]]
# Applies the newly claimed events of a batch (each id once, in partition order) at once.
BatchHandler = Callable[[Connection, Sequence[ReceivedEvent]], Awaitable[None]]

# `inbox.claim` for many event ids in one statement; returns the ids claimed now.
_CLAIM_MANY = """
INSERT INTO eventing_inbox (consumer, event_id)
SELECT $1, event_id FROM unnest($2::text[]) AS event_id
ON CONFLICT DO NOTHING
RETURNING event_id
"""

# Errors after which the same batch may well succeed: retried, never dead-lettered.
TRANSIENT_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    KafkaError,
)


def dead_letter_headers(
    record: ConsumerRecord[bytes, bytes], consumer: str, error: PoisonMessage
) -> list[tuple[str, bytes]]:
    """The original headers plus where the record came from and why it was rejected."""
    extra = {
        "dlq.reason": error.reason,
        "dlq.detail": error.detail[:500],
        "dlq.consumer": consumer,
        "dlq.topic": record.topic,
        "dlq.partition": str(record.partition),
        "dlq.offset": str(record.offset),
        "dlq.time": utcnow().isoformat(),
    }
    original = [
        (name, value) for name, value in (record.headers or ()) if not name.startswith("dlq.")
    ]
    return [*original, *((name, value.encode()) for name, value in extra.items())]


def measure_lag(consumer: AIOKafkaConsumer, name: str, offsets: dict[TopicPartition, int]) -> None:
    """Set `consentry_consumer_lag` of group `name` for the partitions just committed at
    `offsets`, from the high-water marks of the last fetch (no request)."""
    for tp, offset in offsets.items():
        highwater = consumer.highwater(tp)
        if highwater is not None:
            metrics.CONSUMER_LAG.labels(name, tp.topic, str(tp.partition)).set(
                max(0, highwater - offset)
            )


async def commit_offsets(
    consumer: AIOKafkaConsumer, name: str, offsets: dict[TopicPartition, int]
) -> None:
    """Commit `offsets` for group `name`; a commit that fails is logged, not raised: the
    consumers are idempotent by event id, so re-reading after a lost commit is harmless."""
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        # Partitions moved to another member; it re-reads from the last commit and drops
        # (inbox, or the audit chain) what this member already applied.
        log.info("offset commit skipped after rebalance", consumer=name, error=repr(exc))
    except KafkaError as exc:
        # The next batch's commit covers these offsets; until then a restart re-reads them.
        log.warning("offset commit failed", consumer=name, error=repr(exc))


# A partition: aiokafka's TopicPartition, faust's TP (both a (topic, partition) named tuple).
_TP = TypeVar("_TP", bound=tuple[str, int])


class LogLossGuard:
    """Notices a partition whose log now ends before the offset its consumer reads next.

    That happens when the broker lost data under a running consumer: the development broker
    (memory storage) on every restart, Apache Kafka after an unclean leader election. Kafka
    answers a fetch beyond the log's end with OFFSET_OUT_OF_RANGE, which
    `auto_offset_reset="earliest"` turns into a rewind; the development broker answers with
    no records and a high watermark below the position, and a commit of the batch read just
    before the loss can land on the group's new generation. Either way the consumer would wait
    at its old position and skip everything written below it, e.g. the events `replay`
    re-publishes and the new ones written after the loss. The guard tracks the next offset of
    each partition it saw records of (`read`) and, after every poll, names the partitions
    whose high watermark is below it (`lost`): their consumer re-reads them from the
    beginning, which is harmless (inbox, audit chain) and counted in
    `consentry_consumer_log_rewinds`.

    A loss is noticed only while the new log is still shorter than the old position (within
    a poll of the broker's return in practice): after that, nothing distinguishes the new log
    from the old one. docs/reliability.md, "The broker loses its data".
    """

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self._next: dict[tuple[str, int], int] = {}  # partition -> the next offset to read
        self.rewinds = 0

    def read(
        self, fetched: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Note the records a poll returned."""
        for tp, records in fetched.items():
            if records:
                self._next[tp] = records[-1].offset + 1

    def lost(self, highwaters: Mapping[_TP, int | None]) -> list[_TP]:
        """The partitions (of `highwaters`: partition -> its high watermark, None when not
        known yet) to re-read from the beginning; each is then forgotten until read again."""
        lost = [
            tp
            for tp, highwater in highwaters.items()
            if highwater is not None and highwater < self._next.get(tp, 0)
        ]
        for tp in lost:
            log.warning(
                "partition log ends before the consumer's position (the broker lost data);"
                " re-reading it from the beginning",
                consumer=self.consumer,
                topic=tp[0],
                partition=tp[1],
                position=self._next.pop(tp),
                highwater=highwaters[tp],
            )
            metrics.LOG_REWINDS.labels(self.consumer, tp[0]).inc()
        self.rewinds += len(lost)
        return lost

    async def poll(
        self, consumer: AIOKafkaConsumer, *, timeout_ms: int, max_records: int | None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """`consumer.getmany`, after re-reading from their beginning the assigned partitions
        whose log was lost (high watermarks of the last fetches: no request)."""
        lost = self.lost({tp: consumer.highwater(tp) for tp in consumer.assignment()})
        if lost:
            await consumer.seek_to_beginning(*lost)
        fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = await consumer.getmany(
            timeout_ms=timeout_ms, max_records=max_records
        )
        self.read(fetched)
        return fetched


def _position(record: ConsumerRecord[bytes, bytes]) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


async def send_dead_letter(
    producer: AIOKafkaProducer,
    consumer: str,
    record: ConsumerRecord[bytes, bytes],
    error: PoisonMessage,
) -> None:
    """Send `record` to group `consumer`'s dead-letter topic with the reason in its headers
    (acknowledged by the broker before this returns) and count it."""
    log.warning(
        "poison message dead-lettered",
        consumer=consumer,
        reason=error.reason,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
    await producer.send_and_wait(
        dead_letter_topic(consumer),
        value=record.value,
        key=record.key,
        headers=dead_letter_headers(record, consumer, error),
    )
    metrics.DEAD_LETTERS.labels(consumer, error.reason).inc()


async def apply_claimed(
    conn: Connection,
    consumer: str,
    events: Sequence[ReceivedEvent],
    batch_handler: BatchHandler,
) -> list[ReceivedEvent]:
    """Claim the inbox rows of `events` for `consumer` in one statement and apply the events
    claimed now (each id once, in order) in one `batch_handler` call, in one savepoint of
    the caller's transaction; the events applied. When the database or the handler refuses
    (`asyncpg.PostgresError`, `PoisonMessage`) the savepoint is rolled back, nothing is
    claimed, and the error propagates: the caller applies the records one by one instead."""
    fresh: list[ReceivedEvent] = []
    async with conn.transaction():  # savepoint: the whole batch's claims + effects
        rows = await conn.fetch(_CLAIM_MANY, consumer, [event.id for event in events])
        claimed = {row["event_id"] for row in rows}
        for event in events:
            if event.id in claimed:
                claimed.discard(event.id)  # a repeated id in the batch: only once
                fresh.append(event)
        if fresh:
            await batch_handler(conn, fresh)
    return fresh


class EventConsumer:
    """Consume `topics` as group `name`, applying `handler` once per event id.

    `batch_handler` (optional) applies a whole batch at once, `handler` remaining the
    per-record path it falls back to; `max_records` caps the records fetched per poll (the
    Kafka consumer's `max_poll_records` when None). `accepts` (optional) names the event
    types the handlers act on: a record whose `ce_type` header names another known type is
    passed over before it is decoded, with no inbox claim (`envelope.not_for`); its offset
    is committed with the batch's.
    """

    def __init__(
        self,
        name: str,
        kafka_consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        pool: Pool,
        handler: Handler,
        *,
        on_batch_end: BatchHook | None = None,
        batch_handler: BatchHandler | None = None,
        max_records: int | None = None,
        accepts: Collection[EventType] | None = None,
    ) -> None:
        self.name = name
        self._accepts = None if accepts is None else frozenset(t.name for t in accepts)
        self._on_batch_end = on_batch_end
        self._batch_handler = batch_handler
        self._max_records = max_records
        self.dead_letter_topic = dead_letter_topic(name)
        self._consumer = kafka_consumer
        self._producer = producer
        self._pool = pool
        self._handler = handler
        self.applied = 0
        self.duplicates = 0
        self.skipped = 0
        self.dead_lettered = 0
        self.batch_fallbacks = 0
        self.log_loss = LogLossGuard(name)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set."""
        backoff = 0.2
        while not stop.is_set():
            batches = await self.log_loss.poll(
                self._consumer, timeout_ms=500, max_records=self._max_records
            )
            if not batches:
                continue
            while not stop.is_set():
                try:
                    await self._process(batches)
                    backoff = 0.2
                    break
                except TRANSIENT_ERRORS as exc:
                    log.warning("batch failed; retrying", consumer=self.name, error=repr(exc))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            else:
                return
            offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
            await self._commit(offsets)
            self._measure_lag(offsets)

    def _measure_lag(self, offsets: dict[TopicPartition, int]) -> None:
        measure_lag(self._consumer, self.name, offsets)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        await commit_offsets(self._consumer, self.name, offsets)

    async def _process(
        self, batches: Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Apply one poll's records (of every partition it returned) in one transaction."""
        poison: list[tuple[ConsumerRecord[bytes, bytes], PoisonMessage]] = []
        decoded: list[tuple[ConsumerRecord[bytes, bytes], ReceivedEvent]] = []
        for records in batches.values():
            for record in records:
                headers = list(record.headers or ())
                if self._accepts is not None and not_for(self._accepts, headers):
                    self.skipped += 1
                    continue
                try:
                    decoded.append((record, decode(record.key, record.value, headers)))
                except PoisonMessage as error:
                    poison.append((record, error))
        if not decoded and not poison:
            return  # nothing here for this consumer: no transaction
        applied: list[ReceivedEvent] = []
        async with self._pool.acquire() as conn, conn.transaction():
            if self._batch_handler is None or not await self._apply_batch(
                conn, self._batch_handler, decoded, applied
            ):
                await self._apply_each(conn, decoded, applied, poison)
            if applied and self._on_batch_end is not None:
                await self._on_batch_end(conn, applied)
            # Dead letters are acknowledged before the effects commit: a crash in between
            # re-sends a dead letter (harmless) rather than losing one.
            for rejected, reason in sorted(poison, key=lambda item: _position(item[0])):
                await self._dead_letter(rejected, reason)
        metrics.observe_propagation(self.name, ((event.type.name, event.time) for event in applied))

    async def _apply_each(
        self,
        conn: Connection,
        decoded: Sequence[tuple[ConsumerRecord[bytes, bytes], ReceivedEvent]],
        applied: list[ReceivedEvent],
        poison: list[tuple[ConsumerRecord[bytes, bytes], PoisonMessage]],
    ) -> None:
        """The per-record path: a savepoint per record for its claim and effect."""
        for record, event in decoded:
            try:
                with tracing.continuing(event):
                    async with conn.transaction():  # savepoint: one record's claim + effect
                        if await inbox.claim(conn, self.name, event.id):
                            await self._handler(conn, event)
                            applied.append(event)
                            self.applied += 1
                        else:
                            self.duplicates += 1
            except PoisonMessage as error:
                poison.append((record, error))
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
                # Deterministic: the same record would fail the same way on every retry.
                reason = PoisonMessage("rejected-by-database", type(error).__name__)
                poison.append((record, reason))

    async def _apply_batch(
        self,
        conn: Connection,
        batch_handler: BatchHandler,
        decoded: Sequence[tuple[ConsumerRecord[bytes, bytes], ReceivedEvent]],
        applied: list[ReceivedEvent],
    ) -> bool:
        """The batch path: claim every inbox row in one statement, apply the claimed events
        in one call, in one savepoint. False (nothing applied) if the database or the handler
        refused something: the caller then takes the per-record path."""
        if not decoded:
            return True
        events = [event for _, event in decoded]
        try:
            fresh = await apply_claimed(conn, self.name, events, batch_handler)
        except (PoisonMessage, asyncpg.PostgresError) as error:
            # A deterministic refusal is isolated record by record there (applied or dead-
            # lettered); a transient error most likely fails there too: the batch is retried.
            log.warning(
                "batch refused; applying its records one by one",
                consumer=self.name,
                records=len(decoded),
                error=type(error).__name__,
            )
            self.batch_fallbacks += 1
            return False
        applied.extend(fresh)
        self.applied += len(fresh)
        self.duplicates += len(events) - len(fresh)
        return True

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: PoisonMessage
    ) -> None:
        await send_dead_letter(self._producer, self.name, record, error)
        self.dead_lettered += 1
