"""Fixtures for the audit service: a migrated database and events to append."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest_asyncio

from consentry.audit.__main__ import migrations
from consentry.eventing.envelope import ReceivedEvent, decode, encode
from consentry.eventing.migrations import migrate_dsn
from consentry.eventing.testing import consent_event


@pytest_asyncio.fixture
async def audit_db(fresh_database: Callable[[str], Awaitable[str]]) -> str:
    dsn = await fresh_database("audit")
    await migrate_dsn(dsn, migrations())
    return dsn


@pytest_asyncio.fixture
async def db(audit_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(audit_db)
    yield conn
    await conn.close()


def received(tenant: uuid.UUID, subject: str, version: int, *, given: bool = True) -> ReceivedEvent:
    """An event as the appender receives it: encoded for the wire, then decoded."""
    record = encode(
        consent_event(str(tenant), subject, version, given=given, source="/consentry/consent")
    )
    return decode(record.key, record.value, list(record.headers))
