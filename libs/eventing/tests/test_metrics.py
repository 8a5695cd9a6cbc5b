"""Metrics of the eventing processes, scraped over HTTP as Prometheus does: propagation and
dead letters from a consumer, lag, and the relay's backlog gauges."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from consentry.eventing import metrics, outbox
from consentry.eventing.relay import OutboxRelay, RelayOptions
from consentry.eventing.testing import consent_event, produce

from .conftest import TEST_CONSUMER
from .test_consumer import effects_table, run_consumer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scrape_url() -> Iterator[str]:
    """A worker's metrics server (`run_worker` with CONSENTRY_METRICS_PORT) on a free port."""
    server = metrics.serve_metrics(
        metrics.MetricsSettings(metrics_port=0, metrics_host="127.0.0.1")
    )
    assert server is not None
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()


async def scrape(url: str, name: str, **labels: str) -> dict[str, float]:
    """Samples named `name` (exactly) with `labels` among theirs, keyed by their labels."""
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    response.raise_for_status()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                found[repr(sorted(sample.labels.items()))] = sample.value
    return found


async def test_consumer_observes_propagation_counts_dead_letters_and_lag(
    pool: asyncpg.Pool, event_topics: str, consent_topic: str, scrape_url: str
) -> None:
    consent = {"kind": "consent", "consumer": TEST_CONSUMER}
    dead = {"consumer": TEST_CONSUMER, "reason": "missing-headers"}
    before = sum(
        (await scrape(scrape_url, "consentry_propagation_seconds_count", **consent)).values()
    )
    dead_before = sum((await scrape(scrape_url, "consentry_dead_letters_total", **dead)).values())

    await effects_table(pool)
    tenant, subject = str(uuid.uuid4()), uuid.uuid4().hex
    events = [
        consent_event(tenant, subject, 1),
        consent_event(tenant, subject, 2, given=False),
        consent_event(tenant, subject, 3),
    ]
    await produce(
        event_topics,
        [*events, (f"{tenant}/{subject}".encode(), b"no headers")],
        topic=consent_topic,
    )
    group = f"g-{uuid.uuid4().hex[:8]}"
    await run_consumer(event_topics, consent_topic, pool, group, subject, until=len(events))

    after = sum(
        (await scrape(scrape_url, "consentry_propagation_seconds_count", **consent)).values()
    )
    assert after - before == len(events)
    # Each was applied well within the slowest bucket but not before it was produced.
    slowest = await scrape(
        scrape_url, "consentry_propagation_seconds_bucket", le="300.0", **consent
    )
    assert sum(slowest.values()) == after
    assert (
        sum((await scrape(scrape_url, "consentry_propagation_seconds_sum", **consent)).values()) > 0
    )
    dead_after = sum((await scrape(scrape_url, "consentry_dead_letters_total", **dead)).values())
    assert dead_after - dead_before == 1
    lag = await scrape(
        scrape_url, "consentry_consumer_lag", consumer=TEST_CONSUMER, topic=consent_topic
    )
    # One key, so one partition of the test's topic, and it is caught up.
    assert list(lag.values()) == [0]


async def test_relay_sets_backlog_and_oldest_age(
    pool: asyncpg.Pool, event_topics: str, database: str, scrape_url: str
) -> None:
    service = f"relay-{uuid.uuid4().hex[:6]}"
    async with pool.acquire() as conn, conn.transaction():
        for version in range(1, 6):
            await outbox.add(conn, consent_event(str(uuid.uuid4()), "s", version))
    await asyncio.sleep(0.2)  # the rows age

    async def backlog() -> list[float]:
        return list(
            (await scrape(scrape_url, "consentry_outbox_backlog", service=service)).values()
        )

    async def oldest_age() -> list[float]:
        ages = await scrape(scrape_url, "consentry_outbox_oldest_age_seconds", service=service)
        return list(ages.values())

    async def run_relay(options: RelayOptions, expected_backlog: float) -> None:
        """Relay until every row is published and the gauge shows `expected_backlog`."""
        producer = AIOKafkaProducer(bootstrap_servers=event_topics, acks="all")
        await producer.start()
        stop = asyncio.Event()
        task = asyncio.create_task(OutboxRelay(database, producer, options, service).run(stop))
        try:
            async with asyncio.timeout(10):
                while await pool.fetchval(
                    "SELECT count(*) FROM eventing_outbox WHERE published_at IS NULL"
                ) or await backlog() != [expected_backlog]:
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
            await producer.stop()

    # Batches of 2 and a long poll interval: the first pass is measured (3 rows left), the
    # following passes are not (at most one measure per poll interval).
    await run_relay(RelayOptions(batch_size=2, poll_interval=60), expected_backlog=3.0)
    (age,) = await oldest_age()
    assert 0.2 <= age < 10
    await asyncio.sleep(0.3)
    assert await backlog() == [3.0]  # not measured again within the poll interval

    # A new relay's first pass finds nothing left.
    await run_relay(RelayOptions(poll_interval=60), expected_backlog=0.0)
    assert await oldest_age() == [0.0]


def test_propagation_kinds() -> None:
    assert metrics.propagation_kind("consentry.consent.given.v1") == "consent"
    assert metrics.propagation_kind("consentry.consent.withdrawn.v1") == "consent"
    assert metrics.propagation_kind("consentry.preferences.unsubscribed.v1") == "unsubscribe"
    assert metrics.propagation_kind("consentry.lists.member_suppressed.v1") == "unsubscribe"
    assert metrics.propagation_kind("consentry.rights.erasure_requested.v1") == "erasure"
    assert metrics.propagation_kind("consentry.consent.intake.v1") == "consent.intake"
