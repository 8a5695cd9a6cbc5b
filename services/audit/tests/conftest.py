"""Fixtures for the audit service: a migrated database and events to append."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest_asyncio

from consentry.audit.__main__ import migrations
from consentry.audit.app import create_app
from consentry.audit.settings import ApiSettings
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


@asynccontextmanager
async def audit_api(
    audit_db: str, tenant: uuid.UUID, key: str, *, authenticated: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The audit API on `audit_db` with `key` as the dev key of `tenant`, and a client for it."""
    settings = ApiSettings(
        database_url=audit_db, environment="test", dev_api_key=key, dev_tenant_id=tenant
    )
    app = create_app(settings)
    headers = {"X-API-Key": key} if authenticated else {}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://audit", headers=headers) as client,
    ):
        yield client
