"""The audit appender's consumer loop: one batch per poll, in lanes, pipelined.

Each poll of the audited topics (`getmany`: up to `max_records` records of every fetched
partition) is one batch. Its records are decoded (`records.decode_record`; poison is set
aside for the dead-letter topic) and prepared (`service.prepare`: entry bytes, the ids of
their EntryAppended events) a slice at a time, leaving the event loop to the transactions in
flight between slices. The batch is split by tenant into `lanes` parts (a tenant is always in
the same lane, `lane_of`), and each part is applied in one transaction on a connection of its
own: `service.append_prepared` (one `audit_append_batch()` call, then the EntryAppended
outbox rows of the new entries), the checkpoints that are due (`on_batch_end`), the dead
letters (by one part), the commit. Once every part of the batch has committed, its Kafka
offsets are committed.

**Lanes and pipelining.** Parts of different lanes share no tenant, so no chain head: they
run side by side. Within a lane, up to `pipeline` parts are in flight: while part k runs in
PostgreSQL, the appender fetches and prepares the next batch, and sends the lane's part k+1
as soon as k holds its tenants' chain heads: k+1 waits on those row locks and runs the moment
k commits, without a round trip in between. Per-tenant order and exactly-once still hold:

- A tenant's entries keep partition order: the tenant is in one lane; part k+1's append is
  sent only once part k's append (or, if PostgreSQL refused it, k's record-by-record path)
  has returned, and k holds the head rows of its tenants until it ends. Heads are locked in
  tenant order, so no cycle is possible.
- Part k+1 commits only after part k of its lane has committed. If k fails, k+1 (which may
  have appended ahead of k's retry once k's locks were released) rolls back too; once every
  attempt in flight has ended, the parts that did not commit are retried, in order.
- Offsets are committed batch by batch, in order, each after all the batch's parts commit.
- The chain is the inbox: an event id already in its tenant's chain, or earlier in the batch,
  is not appended again (UNIQUE (tenant_id, event_id), checked under the head lock) and gets
  no EntryAppended event, so a redelivered record, or a part applied again, changes nothing.

**Traces.** An event's `ce_traceparent` is read by the decode (`records.decode_record`, a
header lookup on the fast path) and stored in its entry (`AuditEntry.traceparent`), so the
entry, and the EntryAppended event that carries its bytes, names the trace that caused it.
The appender starts no span per event and makes no event's trace current: its parts append
many events at once, and the EntryAppended envelopes are built once per tenant and batch
(`events.entry_appended_envelopes`), so the audit topic's records carry no `ce_traceparent`
of their own. A follower reads the trace from the entry bytes.

**Refusals, failures and metrics** as in `EventConsumer` (ADR 0003): a part's append runs in a
savepoint; if PostgreSQL refuses it, the part is appended record by record (a savepoint
each) and a record the database refuses as invalid data is dead-lettered with
`dlq.reason = rejected-by-database`. A transient error rolls the part (and its lane's later
parts) back and retries them with backoff; any other exception stops the loop loudly. Once a
part commits, its new entries observe `consentry_propagation_seconds`; dead letters count in
`consentry_dead_letters_total`; after each batch's offsets, `consentry_consumer_lag`.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from consentry.audit.chain.service import Prepared, append_prepared, prepare
from consentry.audit.records import decode_record
from consentry.eventing import metrics
from consentry.eventing.consumer import (
    TRANSIENT_ERRORS,
    LogLossGuard,
    commit_offsets,
    measure_lag,
    send_dead_letter,
)
from consentry.eventing.db import Connection, Pool
from consentry.eventing.envelope import PoisonMessage, ReceivedEvent
from consentry.eventing.logs import get_logger
from consentry.eventing.topics import dead_letter_topic

log = get_logger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
# Runs at the end of a batch's transaction with the events appended in it.
BatchHook = Callable[[Connection, Sequence[ReceivedEvent]], Awaitable[None]]
# Records decoded and prepared between two returns to the event loop.
SLICE = 100


def lane_of(tenant_id: str, lanes: int) -> int:
    """The lane of a tenant's appends, of `lanes` (the same in every process)."""
    return zlib.crc32(tenant_id.encode()) % lanes


class _PreviousPartFailedError(Exception):
    """The lane's previous part did not commit, so this one must not either."""


def _future() -> asyncio.Future[bool]:
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)
class _Part:
    """A lane's share of a batch (the events of its tenants, prepared), and the state of one
    attempt to apply it."""

    lane: int
    records: list[Record]  # decoded, in poll order, with `events` and `prepared`
    events: list[ReceivedEvent]
    prepared: Prepared
    poison: list[tuple[Record, PoisonMessage]]  # the batch's, dead-lettered by one part
    # Set when this attempt holds its tenants' heads (or has given up).
    appended: asyncio.Event = field(default_factory=asyncio.Event)
    # True once this attempt has committed; False if it failed.
    committed: asyncio.Future[bool] = field(default_factory=_future)
    task: asyncio.Task[None] | None = None

    def again(self) -> _Part:
        """The same part for a new attempt."""
        return _Part(self.lane, self.records, self.events, self.prepared, self.poison)

    @property
    def done(self) -> bool:
        """This attempt committed."""
        return self.committed.done() and self.committed.result()


@dataclass(eq=False)
class _Batch:
    """One poll: its offsets, and its parts (a lane each)."""

    offsets: dict[TopicPartition, int]
    parts: list[_Part]


@dataclass(frozen=True)
class _Appended:
    """What one attempt appended: the new events, how many were already in the chain, the
    records the database refused, and whether the part went record by record."""

    events: list[ReceivedEvent]
    duplicates: int
    refused: list[tuple[Record, PoisonMessage]]
    one_by_one: bool


class ChainAppender:
    """Consume as group `name`, appending every event to its tenant's chain exactly once.

    `batch_append=False` appends every record on its own (a savepoint each), for comparison;
    `pipeline` is how many batches may be in flight (1: one at a time); `lanes` how many
    transactions apply a batch side by side, each for a fixed share of the tenants.
    """

    def __init__(
        self,
        name: str,
        kafka_consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        pool: Pool,
        *,
        on_batch_end: BatchHook | None = None,
        batch_append: bool = True,
        max_records: int | None = None,
        pipeline: int = 2,
        lanes: int = 2,
    ) -> None:
        if pipeline < 1 or lanes < 1:
            raise ValueError("pipeline and lanes must be >= 1")
        self.name = name
        self.dead_letter_topic = dead_letter_topic(name)
        self._consumer = kafka_consumer
        self._producer = producer
        self._pool = pool
        self._on_batch_end = on_batch_end
        self._batch_append = batch_append
        self._max_records = max_records
        self._pipeline = pipeline
        self._lanes = lanes
        self._lane_of: dict[str, int] = {}
        self.applied = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.batch_fallbacks = 0
        self.log_loss = LogLossGuard(name)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; the batches in flight then finish and commit."""
        flight: deque[_Batch] = deque()
        newest: dict[int, _Part] = {}  # the last part started in each lane
        backoff = 0.2
        try:
            while flight or not stop.is_set():
                if not stop.is_set() and len(flight) < self._pipeline:
                    fetched = await self.log_loss.poll(
                        self._consumer,
                        timeout_ms=0 if flight else 500,
                        max_records=self._max_records,
                    )
                    if fetched:
                        batch = await self._prepare(fetched)
                        for part in batch.parts:
                            self._start(part, newest)
                        flight.append(batch)
                        continue
                    if not flight:
                        continue
                batch = flight[0]
                tasks = [part.task for part in batch.parts if part.task]
                await asyncio.wait(tasks)
                if all(task.exception() is None for task in tasks):
                    flight.popleft()
                    await commit_offsets(self._consumer, self.name, batch.offsets)
                    measure_lag(self._consumer, self.name, batch.offsets)
                    backoff = 0.2
                    continue
                # A lane's later parts roll back (none commits before its predecessor): once
                # every attempt in flight has ended, retry the parts that did not commit.
                tasks = [part.task for b in flight for part in b.parts if part.task]
                await asyncio.wait(tasks)
                errors = [error for task in tasks if (error := task.exception()) is not None]
                causes = [e for e in errors if not isinstance(e, _PreviousPartFailedError)]
                for error in causes:
                    if not isinstance(error, TRANSIENT_ERRORS):
                        raise error
                log.warning(
                    "batch failed; retrying what did not commit",
                    consumer=self.name,
                    error=repr(causes[0] if causes else errors[0]),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                if stop.is_set():
                    return  # not committed: read again by the next run
                backoff = min(backoff * 2, 5.0)
                newest.clear()
                for b in flight:
                    b.parts = [part if part.done else part.again() for part in b.parts]
                    for part in b.parts:
                        if not part.done:
                            self._start(part, newest)
        finally:
            tasks = [part.task for b in flight for part in b.parts if part.task]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _lane(self, tenant_id: str) -> int:
        lane = self._lane_of.get(tenant_id)
        if lane is None:
            lane = self._lane_of[tenant_id] = lane_of(tenant_id, self._lanes)
        return lane

    async def _prepare(self, fetched: dict[TopicPartition, list[Record]]) -> _Batch:
        lanes = range(self._lanes)
        records: list[list[Record]] = [[] for _ in lanes]
        events: list[list[ReceivedEvent]] = [[] for _ in lanes]
        prepared: list[list[Prepared]] = [[] for _ in lanes]
        poison: list[tuple[Record, PoisonMessage]] = []
        polled = [record for batch in fetched.values() for record in batch]
        for start in range(0, len(polled), SLICE):
            if start:
                await asyncio.sleep(0)  # let the parts in flight move on
            decoded: list[list[ReceivedEvent]] = [[] for _ in lanes]
            for record in polled[start : start + SLICE]:
                try:
                    event = decode_record(record.key, record.value, record.headers)
                except PoisonMessage as error:
                    poison.append((record, error))
                else:
                    lane = self._lane(event.tenant_id)
                    decoded[lane].append(event)
                    records[lane].append(record)
            for lane in lanes:
                if decoded[lane]:
                    events[lane] += decoded[lane]
                    prepared[lane].append(prepare(decoded[lane]))
        parts = [
            _Part(lane, records[lane], events[lane], Prepared.join(prepared[lane]), [])
            for lane in lanes
            if events[lane] or (poison and lane == 0)
        ]
        parts[0].poison.extend(poison)  # there is a part: the poll was not empty
        offsets = {tp: batch[-1].offset + 1 for tp, batch in fetched.items()}
        return _Batch(offsets, parts)

    def _start(self, part: _Part, newest: dict[int, _Part]) -> None:
        previous = newest.get(part.lane)
        part.task = asyncio.create_task(self._apply(part, previous))
        newest[part.lane] = part

    async def _apply(self, part: _Part, previous: _Part | None) -> None:
        """One attempt at `part`, in one transaction, after `previous` (see the module)."""
        try:
            if previous is not None:
                await previous.appended.wait()
                if previous.committed.done() and not previous.committed.result():
                    raise _PreviousPartFailedError
            async with self._pool.acquire() as conn, conn.transaction():
                appended = await self._append(conn, part)
                part.appended.set()
                if appended.events and self._on_batch_end is not None:
                    await self._on_batch_end(conn, appended.events)
                # Dead letters are acknowledged before the effects commit: a crash in between
                # re-sends a dead letter (harmless) rather than losing one.
                rejected = sorted(
                    [*part.poison, *appended.refused],
                    key=lambda item: (item[0].topic, item[0].partition, item[0].offset),
                )
                for record, reason in rejected:
                    await self._dead_letter(record, reason)
                if previous is not None and not await previous.committed:
                    raise _PreviousPartFailedError
        except BaseException:
            part.appended.set()
            part.committed.set_result(False)
            raise
        part.committed.set_result(True)
        metrics.observe_propagation(self.name, ((e.type.name, e.time) for e in appended.events))
        self.applied += len(appended.events)
        self.duplicates += appended.duplicates
        if appended.one_by_one and self._batch_append:
            self.batch_fallbacks += 1

    async def _append(self, conn: Connection, part: _Part) -> _Appended:
        """The part's events in one call, or record by record if the database refuses it."""
        if self._batch_append and part.events:
            try:
                async with conn.transaction():  # savepoint: the whole part
                    rows = await append_prepared(conn, part.prepared)
            except asyncpg.PostgresError as error:
                # A deterministic refusal is isolated record by record (appended or dead-
                # lettered); a transient error most likely fails there too: then a retry.
                log.warning(
                    "batch refused; appending its records one by one",
                    consumer=self.name,
                    error=type(error).__name__,
                )
            else:
                pairs = zip(part.events, rows, strict=True)
                new = [event for event, row in pairs if row["appended"]]
                return _Appended(new, len(rows) - len(new), [], one_by_one=False)
        appended: list[ReceivedEvent] = []
        refused: list[tuple[Record, PoisonMessage]] = []
        duplicates = 0
        for at, (record, event) in enumerate(zip(part.records, part.events, strict=True)):
            try:
                async with conn.transaction():  # savepoint: one record
                    (row,) = await append_prepared(conn, part.prepared[at : at + 1])
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
                # Deterministic: the same record would fail the same way on every retry.
                refused.append(
                    (record, PoisonMessage("rejected-by-database", type(error).__name__))
                )
                continue
            if row["appended"]:
                appended.append(event)
            else:
                duplicates += 1
        return _Appended(appended, duplicates, refused, one_by_one=True)

    async def _dead_letter(self, record: Record, error: PoisonMessage) -> None:
        await send_dead_letter(self._producer, self.name, record, error)
        self.dead_lettered += 1
