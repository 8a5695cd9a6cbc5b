"""Fixtures for eventing's integration tests: a migrated database and the topics."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest_asyncio

from consentry.devstack.broker import create_topics
from consentry.eventing import topics
from consentry.eventing.migrations import eventing_migrations, migrate_dsn
from consentry.eventing.topics import TopicSpec, dead_letter_topic

TEST_CONSUMER = "eventing-test"


@pytest_asyncio.fixture
async def database(fresh_database: Callable[[str], Awaitable[str]]) -> str:
    dsn = await fresh_database("eventing")
    await migrate_dsn(dsn, eventing_migrations())
    return dsn


@pytest_asyncio.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session")
async def event_topics(kafka_bootstrap: str) -> str:
    await create_topics(
        kafka_bootstrap,
        [TopicSpec(topics.CONSENT), TopicSpec(dead_letter_topic(TEST_CONSUMER), partitions=1)],
    )
    return kafka_bootstrap


@pytest_asyncio.fixture
async def consent_topic(event_topics: str) -> str:
    """A topic of this test's own, with the consent topic's partitions (the default): a
    consumer under test reads there this test's records only, never the events other tests
    leave on the session's broker (a policy on the consent topic, say)."""
    name = f"eventing-test.consent.{uuid.uuid4().hex[:12]}"
    await create_topics(event_topics, [TopicSpec(name)])
    return name
