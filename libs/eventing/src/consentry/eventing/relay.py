"""Outbox relay: publishes committed outbox rows to Kafka in order, then marks them.

One relay per service database is active at a time: it holds a session advisory lock, and
any other relay instance waits as a hot standby. The active relay reads unpublished rows in
position order (see `outbox` for why position order is commit order per key), sends them with
`acks=all`, waits for every acknowledgement, and only then marks them published. A crash
between send and mark re-sends those rows on restart: delivery is at-least-once and the
consumers are idempotent by event id. aiokafka keeps at most one request in flight per
partition, so its retries do not reorder records of one key.

Published rows are kept for `retention` so they can be replayed (`replay`) after a broker lost
its data or for a new consumer, then deleted.

After a pass (at most once per `poll_interval`) it sets `consentry_outbox_backlog` and
`consentry_outbox_oldest_age_seconds` from the unpublished rows left.

The relay wakes on `NOTIFY eventing_outbox` (sent at commit by a trigger) and also polls every
`poll_interval` seconds, so a missed notification only adds latency.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import Field

from consentry.eventing import kafka, metrics
from consentry.eventing.db import CUSTOM_PLANS, Connection
from consentry.eventing.logs import get_logger
from consentry.eventing.settings import DatabaseSettings, KafkaSettings, process_name

log = get_logger(__name__)

_RELAY_LOCK_KEY = 0x6F7574626F78  # "outbox": one active relay per database
_FETCH = """
SELECT position, topic, message_key, headers, payload
FROM eventing_outbox
WHERE published_at IS NULL
ORDER BY position
LIMIT $1
"""
_MARK = (
    "UPDATE eventing_outbox SET published_at = clock_timestamp() WHERE position = ANY($1::bigint[])"
)
_PURGE = "DELETE FROM eventing_outbox WHERE published_at IS NOT NULL AND published_at < $1"
_REPLAY = """
UPDATE eventing_outbox SET published_at = NULL
WHERE published_at IS NOT NULL AND created_at >= $1
"""
_BACKLOG = """
SELECT count(*) AS rows, min(created_at) AS oldest FROM eventing_outbox WHERE published_at IS NULL
"""
# The backlog is read through the partial index of unpublished rows, never by reading the
# table: with statistics taken during a burst (most rows unpublished then) PostgreSQL
# judged a sequential scan cheaper and read every retained row, once a second (the audit
# relay: 41 scans, 31 million rows, in one bulk erasure of bench.rights_erasure).
_INDEX_READS_ONLY = "SET LOCAL enable_seqscan = off"


@dataclass(frozen=True)
class RelayOptions:
    """How the relay batches, polls and retains."""

    batch_size: int = 500
    poll_interval: float = 1.0
    retention: timedelta = timedelta(days=7)
    purge_interval: float = 300.0


async def publish_pending(conn: Connection, producer: AIOKafkaProducer, batch_size: int) -> int:
    """Publish one batch of unpublished rows; return how many were published."""
    rows = await conn.fetch(_FETCH, batch_size)
    if not rows:
        return 0
    futures = []
    for row in rows:
        headers = [(name, value.encode()) for name, value in json.loads(row["headers"]).items()]
        futures.append(
            await producer.send(
                row["topic"], value=row["payload"], key=row["message_key"], headers=headers
            )
        )
    results = await asyncio.gather(*futures, return_exceptions=True)
    sent = [
        row["position"]
        for row, result in zip(rows, results, strict=True)
        if not isinstance(result, BaseException)
    ]
    failures = [result for result in results if isinstance(result, BaseException)]
    if sent:
        await conn.execute(_MARK, sent)
    if failures:
        log.warning(
            "outbox rows not acknowledged; retrying", failed=len(failures), error=repr(failures[0])
        )
        raise failures[0]
    return len(sent)


async def replay(conn: Connection, since: datetime) -> int:
    """Mark every retained row created at or after `since` for publication again."""
    status = await conn.execute(_REPLAY, since)
    return int(status.split()[-1])


async def backlog(conn: Connection) -> tuple[int, float]:
    """Unpublished rows and the age in seconds of the oldest one (in a transaction of its
    own: call it outside one)."""
    async with conn.transaction():
        await conn.execute(_INDEX_READS_ONLY)
        row = await conn.fetchrow(_BACKLOG)
    assert row is not None
    age = 0.0 if row["oldest"] is None else max(0.0, time.time() - row["oldest"].timestamp())
    return int(row["rows"]), age


class OutboxRelay:
    """The relay process's loop: wait for leadership, then publish on notify or poll."""

    def __init__(
        self,
        dsn: str,
        producer: AIOKafkaProducer,
        options: RelayOptions | None = None,
        service: str | None = None,
    ) -> None:
        self._dsn = dsn
        self._producer = producer
        self._options = options or RelayOptions()
        # `service` label of the backlog gauges (default: CONSENTRY_SERVICE_NAME)
        self._service = metrics.service_name() if service is None else service
        self._wake = asyncio.Event()
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; reconnects after database or broker failures."""
        backoff = 0.2
        while not stop.is_set():
            try:
                await self._lead(stop)
                backoff = 0.2
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("relay connection lost; reconnecting", error=repr(exc), backoff=backoff)
            except Exception as exc:  # broker errors: aiokafka raises its own hierarchy
                log.warning("relay publish failed; retrying", error=repr(exc), backoff=backoff)
            await _sleep_or_stop(stop, backoff)
            backoff = min(backoff * 2, 5.0)

    async def _lead(self, stop: asyncio.Event) -> None:
        # The outbox grows and shrinks: a plan cached while it was small would keep scanning
        # it sequentially (see `create_pool`'s custom_plans).
        conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": process_name(), **CUSTOM_PLANS}
        )
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _RELAY_LOCK_KEY):
                log.debug("another relay is active; standing by")
                if await _sleep_or_stop(stop, self._options.poll_interval):
                    return
            log.info("relay active")
            await conn.add_listener("eventing_outbox", self._on_notify)
            last_purge = 0.0
            last_measure = float("-inf")
            while not stop.is_set():
                self._wake.clear()
                published = await publish_pending(conn, self._producer, self._options.batch_size)
                self.published += published
                if time.monotonic() - last_measure >= self._options.poll_interval:
                    await self._measure(conn)  # at most once per poll interval
                    last_measure = time.monotonic()
                if published >= self._options.batch_size:
                    continue  # more waiting: no sleep
                if time.monotonic() - last_purge > self._options.purge_interval:
                    await conn.execute(
                        _PURGE, datetime.now().astimezone() - self._options.retention
                    )
                    last_purge = time.monotonic()
                await self._wait(stop)
        finally:
            await asyncio.shield(conn.close(timeout=5))

    async def _measure(self, conn: Connection) -> None:
        """Set the backlog gauges from the unpublished rows left after a pass."""
        rows, age = await backlog(conn)
        metrics.OUTBOX_BACKLOG.labels(self._service).set(rows)
        metrics.OUTBOX_OLDEST_AGE.labels(self._service).set(age)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(
                waiters, timeout=self._options.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


class RelaySettings(DatabaseSettings, KafkaSettings):
    """A service's outbox relay process: its database and the broker."""

    relay_batch_size: int = Field(default=500, ge=1)
    relay_poll_interval: float = Field(default=1.0, gt=0)
    relay_retention_days: int = Field(default=7, ge=0)


async def run_relay(settings: RelaySettings, stop: asyncio.Event) -> None:
    """Publish the service database's outbox until `stop` is set."""
    producer = kafka.producer(settings, "-relay")
    await producer.start()
    try:
        options = RelayOptions(
            batch_size=settings.relay_batch_size,
            poll_interval=settings.relay_poll_interval,
            retention=timedelta(days=settings.relay_retention_days),
        )
        await OutboxRelay(settings.database_url, producer, options).run(stop)
    finally:
        await producer.stop()
