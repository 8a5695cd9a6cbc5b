"""Fixtures for the consent service: a migrated database and the API on it.

The API logs in as `consentry_consent_app`, a non-superuser member of the group role
`consentry_consent_rw` (migration 0002), as it does in the dev stack, so row-level security
is really active in every API test. `db` is the owner's (superuser's) connection: it sees
every tenant's rows, for checking what was written.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from starlette.datastructures import State

from consentry.consent.__main__ import migrations
from consentry.consent.app import create_app
from consentry.consent.db import set_tenant
from consentry.consent.keys.service import create_key
from consentry.consent.purposes.models import DEFAULT_PURPOSES
from consentry.consent.sealing import DEV_MASTER_KEY, MasterKeySettings, Sealer
from consentry.consent.settings import ApiSettings
from consentry.consent.tenants.service import create_tenant
from consentry.devstack.postgres import ensure_login_role, with_user
from consentry.eventing.migrations import migrate_dsn
from consentry.httpapi.auth import ALL_SCOPES, Scope

API_KEY = "test-key-0123456789abcdefghij"
TENANT_ID = uuid.UUID("00000000-0000-4000-8000-0000000000c1")
APP_ROLE = "consentry_consent_app"  # the login role the dev stack gives the consent processes
GROUP_ROLE = "consentry_consent_rw"


@pytest_asyncio.fixture
async def consent_db(fresh_database: Callable[[str], Awaitable[str]]) -> str:
    """DSN of a fresh, migrated consent database, as its owner (a superuser)."""
    dsn = await fresh_database("consent")
    await migrate_dsn(dsn, migrations())
    return dsn


@pytest_asyncio.fixture
async def app_dsn(consent_db: str) -> str:
    """DSN of the consent database as the application's role: RLS applies to it."""
    await ensure_login_role(consent_db, APP_ROLE, GROUP_ROLE)
    return with_user(consent_db, APP_ROLE)


@pytest.fixture
def api_settings(app_dsn: str) -> ApiSettings:
    return ApiSettings(
        database_url=app_dsn,
        environment="test",
        dev_api_key=API_KEY,
        dev_tenant_id=TENANT_ID,
        http_max_body_bytes=4096,
    )


@pytest.fixture
def sealer() -> Sealer:
    """The sealer of the test settings (the well-known development master key)."""
    return MasterKeySettings(environment="test", consent_master_key=DEV_MASTER_KEY).sealer()


@pytest_asyncio.fixture
async def consent_app(api_settings: ApiSettings) -> AsyncIterator[FastAPI]:
    """The consent API, started (lifespan entered)."""
    app = create_app(api_settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def app_state(consent_app: FastAPI) -> State:
    """The started API's `app.state` (pool, key resolver, caches)."""
    return consent_app.state


@pytest_asyncio.fixture
async def client(consent_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `consent_app` presenting the dev key (every scope, tenant TENANT_ID)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=consent_app),
        base_url="http://consent",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        yield client


# The tenant's first policy version, covering every default purpose (a first version takes
# effect at once; later ones need 30 working days' notice when they change a purpose).
POLICY_VERSION = "2026-01"
POLICY_URL = "https://example.com/privacy/2026-01"


async def publish_first_policy(
    client: httpx.AsyncClient, version: str = POLICY_VERSION, extra_purposes: Iterable[str] = ()
) -> str:
    """Publish `version` covering every default purpose, effective today; return its URL.

    `extra_purposes` are created first (consent-based) and covered too.
    """
    for purpose in extra_purposes:
        created = await client.put(
            f"/v1/purposes/{purpose}", json={"title": purpose, "legal_basis": "consent"}
        )
        assert created.status_code in (200, 201), created.text
    today = datetime.now(ZoneInfo("Europe/Stockholm")).date()
    response = await client.post(
        "/v1/policy-versions",
        json={
            "version": version,
            "url": POLICY_URL,
            "effective_on": today.isoformat(),
            "purposes": [
                {"purpose": purpose, "notice": f"What we do for {purpose}."}
                for purpose in (*DEFAULT_PURPOSES, *extra_purposes)
            ],
        },
    )
    assert response.status_code == 201, response.text
    return POLICY_URL


@pytest_asyncio.fixture
async def published_policy(client: httpx.AsyncClient) -> str:
    """The dev tenant's first policy version `2026-01` is published; its URL."""
    return await publish_first_policy(client)


@pytest_asyncio.fixture
async def subject_key(app_state: State) -> bytes:
    """The dev tenant's subject key (for computing subject refs as producers do)."""
    key: bytes | None = await app_state.subject_keys.get(TENANT_ID)
    assert key is not None
    return key


ClientFor = Callable[[str | None], httpx.AsyncClient]


@pytest_asyncio.fixture
async def client_for(consent_app: FastAPI) -> AsyncIterator[ClientFor]:
    """Factory: a client of `consent_app` presenting `key` (None: no key at all)."""
    async with contextlib.AsyncExitStack() as stack:

        def make(key: str | None) -> httpx.AsyncClient:
            headers = {} if key is None else {"Authorization": f"Bearer {key}"}
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=consent_app),
                base_url="http://consent",
                headers=headers,
            )
            stack.push_async_callback(client.aclose)
            return client

        yield make


@pytest_asyncio.fixture
async def db(consent_db: str) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection (a superuser: sees every tenant's rows)."""
    conn = await asyncpg.connect(consent_db)
    yield conn
    await conn.close()


@pytest_asyncio.fixture
async def app_conn(app_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the application's role (no tenant set: it sees no tenant's rows)."""
    conn = await asyncpg.connect(app_dsn)
    yield conn
    await conn.close()


@dataclass(frozen=True)
class TenantKey:
    """A tenant made for a test and one API key of it."""

    tenant_id: uuid.UUID
    key: str
    key_id: str


MakeTenant = Callable[..., Awaitable[TenantKey]]


@pytest.fixture
def make_tenant(db: asyncpg.Connection, sealer: Sealer) -> MakeTenant:
    """Factory: `await make_tenant("Acme", scopes=[...])` creates a tenant and a key of it."""

    async def make(name: str = "Test Org", *, scopes: Iterable[str] = ALL_SCOPES) -> TenantKey:
        async with db.transaction():
            tenant_id = await create_tenant(db, sealer=sealer, name=name)
            created = await create_key(
                db,
                tenant_id=tenant_id,
                name="test key",
                scopes=[Scope(scope) for scope in scopes],
                created_by_key=None,
            )
        return TenantKey(tenant_id, created.key, created.id)

    return make


MakeKey = Callable[..., Awaitable[TenantKey]]


@pytest.fixture
def make_key(db: asyncpg.Connection) -> MakeKey:
    """Factory: `await make_key(tenant_id, scopes=[...])` creates another key of a tenant."""

    async def make(tenant_id: uuid.UUID, *, scopes: Iterable[str]) -> TenantKey:
        async with db.transaction():
            await set_tenant(db, tenant_id)
            created = await create_key(
                db,
                tenant_id=tenant_id,
                name="test key",
                scopes=[Scope(scope) for scope in scopes],
                created_by_key=None,
            )
        return TenantKey(tenant_id, created.key, created.id)

    return make
