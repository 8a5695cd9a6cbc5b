"""Fixtures for the consent service: a migrated database and the API on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest
import pytest_asyncio

from consentry.consent.__main__ import migrations
from consentry.consent.app import create_app
from consentry.consent.settings import ApiSettings
from consentry.eventing.migrations import migrate_dsn

API_KEY = "test-key-0123456789abcdefghij"
TENANT_ID = uuid.UUID("00000000-0000-4000-8000-0000000000c1")


@pytest_asyncio.fixture
async def consent_db(fresh_database: Callable[[str], Awaitable[str]]) -> str:
    dsn = await fresh_database("consent")
    await migrate_dsn(dsn, migrations())
    return dsn


@pytest.fixture
def api_settings(consent_db: str) -> ApiSettings:
    return ApiSettings(
        database_url=consent_db,
        environment="test",
        dev_api_key=API_KEY,
        dev_tenant_id=TENANT_ID,
        http_max_body_bytes=4096,
    )


@pytest_asyncio.fixture
async def client(api_settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://consent",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as client:
            yield client


@pytest_asyncio.fixture
async def db(consent_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(consent_db)
    yield conn
    await conn.close()
