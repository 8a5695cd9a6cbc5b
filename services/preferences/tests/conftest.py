"""Fixtures for the preferences service: a migrated database, a provisioned tenant, the API.

The API logs in as `consentry_preferences_app`, a non-superuser member of the group role
`consentry_preferences_rw` (migration 0001), as in the dev stack, so row-level security is
active in every API test. `db` is the owner's (superuser's) connection: it sees every row.

The tenant directory (ADR 0008) normally brings tenants from the consent service; here
`provision_tenant` writes the same row the directory follower writes.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from consentry.devstack.postgres import ensure_login_role, with_user
from consentry.eventing.directory import pseudonymise, subject_key_context
from consentry.eventing.migrations import migrate_dsn
from consentry.eventing.sealing import Sealer
from consentry.preferences.__main__ import migrations
from consentry.preferences.app import create_app
from consentry.preferences.settings import DEV_PREFERENCES_MASTER_KEY, ApiSettings
from consentry.preferences.tenants import kek_context, link_key_context

API_KEY = "test-key-0123456789abcdefghij"
TENANT_ID = uuid.UUID("00000000-0000-4000-8000-0000000000c1")
SUBJECT_KEY = b"s" * 32  # the test tenant's subject key (as the consent service would hold it)
APP_ROLE = "consentry_preferences_app"
GROUP_ROLE = "consentry_preferences_rw"


@pytest_asyncio.fixture
async def preferences_db(fresh_database: Callable[[str], Awaitable[str]]) -> str:
    """DSN of a fresh, migrated preferences database, as its owner (a superuser)."""
    dsn = await fresh_database("preferences")
    await migrate_dsn(dsn, migrations())
    return dsn


@pytest_asyncio.fixture
async def app_dsn(preferences_db: str) -> str:
    """DSN of the preferences database as the application's role: RLS applies to it."""
    await ensure_login_role(preferences_db, APP_ROLE, GROUP_ROLE)
    return with_user(preferences_db, APP_ROLE)


@pytest.fixture
def sealer() -> Sealer:
    """The sealer of the well-known development master key (the test settings' default)."""
    return Sealer(base64.b64decode(DEV_PREFERENCES_MASTER_KEY))


async def provision_tenant(
    conn: asyncpg.Connection,
    sealer: Sealer,
    tenant_id: uuid.UUID,
    *,
    name: str = "Test tenant",
    subject_key: bytes = SUBJECT_KEY,
) -> None:
    """Write a tenant row as the directory follower does (owner connection)."""
    await conn.execute(
        "INSERT INTO tenants (id, name, subject_key_sealed, kek_sealed, link_key_sealed,"
        " provisioned_at) VALUES ($1, $2, $3, $4, $5, $6)",
        tenant_id,
        name,
        sealer.seal(subject_key, context=subject_key_context(tenant_id)),
        sealer.seal(secrets.token_bytes(32), context=kek_context(tenant_id)),
        sealer.seal(secrets.token_bytes(32), context=link_key_context(tenant_id)),
        datetime.now(UTC),
    )


def ref_of(subject_id: str, subject_key: bytes = SUBJECT_KEY) -> str:
    """The subject reference of `subject_id` in the test tenant."""
    return pseudonymise(subject_key, subject_id)


async def set_consent(
    conn: asyncpg.Connection,
    subject_ref: str,
    *,
    given: bool,
    version: int = 1,
    tenant_id: uuid.UUID = TENANT_ID,
    purpose: str = "marketing-email",
) -> None:
    """Write this service's copy of a consent decision as the consent follower does."""
    await conn.execute(
        "INSERT INTO consent_copy (tenant_id, subject_ref, purpose, given, subject_version,"
        " policy_version, decided_at) VALUES ($1, $2, $3, $4, $5, '2026-01', now())"
        " ON CONFLICT (tenant_id, subject_ref, purpose) DO UPDATE"
        " SET given = EXCLUDED.given, subject_version = EXCLUDED.subject_version",
        tenant_id,
        subject_ref,
        purpose,
        given,
        version,
    )


@pytest_asyncio.fixture
async def db(preferences_db: str) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection (a superuser: sees every tenant's rows)."""
    conn = await asyncpg.connect(preferences_db)
    yield conn
    await conn.close()


@pytest_asyncio.fixture
async def tenant(db: asyncpg.Connection, sealer: Sealer) -> uuid.UUID:
    """The test tenant (the dev key's), provisioned."""
    await provision_tenant(db, sealer, TENANT_ID)
    return TENANT_ID


@pytest.fixture
def api_settings(app_dsn: str) -> ApiSettings:
    return ApiSettings(
        database_url=app_dsn,
        environment="test",
        dev_api_key=API_KEY,
        dev_tenant_id=TENANT_ID,
        public_url="http://preferences.test",
    )


@pytest_asyncio.fixture
async def preferences_app(api_settings: ApiSettings, tenant: uuid.UUID) -> AsyncIterator[FastAPI]:
    """The preferences API, started (lifespan entered), with the test tenant provisioned."""
    app = create_app(api_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture
async def client(preferences_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client presenting the dev key (every scope, tenant TENANT_ID)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=preferences_app),
        base_url="http://preferences.test",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        yield client


MARKETING_TOPIC = {
    "category": "marketing",
    "channels": ["email", "sms"],
    "labels": {"en": "Product news", "sv": "Produktnyheter"},
    "descriptions": {"en": "New features, monthly", "sv": "Nyheter varje månad"},
}
TRANSACTIONAL_TOPIC = {
    "category": "transactional",
    "channels": ["email"],
    "labels": {"en": "Receipts", "sv": "Kvitton"},
}


@pytest_asyncio.fixture
async def topics(client: httpx.AsyncClient) -> list[str]:
    """Three topics: `product-news` and `partner-offers` (marketing), `receipts`
    (transactional)."""
    for name, body in (
        ("product-news", MARKETING_TOPIC),
        ("partner-offers", {**MARKETING_TOPIC, "labels": {"en": "Partner offers"}}),
        ("receipts", TRANSACTIONAL_TOPIC),
    ):
        response = await client.put(f"/v1/topics/{name}", json=body)
        assert response.status_code == 201, response.text
    return ["partner-offers", "product-news", "receipts"]
