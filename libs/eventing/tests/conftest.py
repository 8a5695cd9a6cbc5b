"""Fixtures for eventing's integration tests: a migrated database and the topics."""

from __future__ import annotations

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
