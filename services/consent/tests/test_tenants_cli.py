"""create-tenant and create-api-key, run as real processes with the owner's credentials."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio

from consentry.consent.__main__ import migrations
from consentry.consent.app import create_app
from consentry.consent.keys.resolver import DbKeyResolver
from consentry.consent.keys.service import create_key
from consentry.consent.sealing import Sealer
from consentry.consent.settings import ApiSettings
from consentry.consent.tenants import service as tenants
from consentry.devstack.postgres import ensure_login_role, with_user
from consentry.eventing.migrations import migrate_dsn
from consentry.httpapi.auth import Scope

from .conftest import APP_ROLE, GROUP_ROLE, ClientFor

pytestmark = pytest.mark.integration
OWNER_ROLE = "consentry_test_owner"  # a non-superuser database owner, as in production


async def cli(dsn: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consentry.consent",
        *args,
        env={**os.environ, "CONSENTRY_DATABASE_URL": dsn, "CONSENTRY_ENVIRONMENT": "test"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


def printed(out: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+): (.*)$", out, re.MULTILINE))


async def test_create_tenant_prints_a_key_that_works(
    consent_db: str, client_for: ClientFor, db: asyncpg.Connection
) -> None:
    tenant_id = uuid.uuid4()
    code, out, err = await cli(
        consent_db, "create-tenant", "--name", "Acme Learning AB", "--tenant-id", str(tenant_id)
    )
    assert code == 0, out + err
    values = printed(out)
    assert values["tenant_id"] == str(tenant_id)
    assert values["scopes"] == "admin"
    assert "shown only now" in err
    key = values["api_key"]
    assert key.startswith(f"csk_{values['api_key_id']}_")
    assert await db.fetchval(
        "SELECT created_by_key IS NULL FROM api_keys WHERE id = $1", values["api_key_id"]
    )

    api = client_for(key)
    me = await api.get("/v1/tenant")
    assert me.status_code == 200
    assert me.json() == {
        "id": str(tenant_id),
        "name": "Acme Learning AB",
        "created_at": me.json()["created_at"],
    }
    created = await api.post("/v1/api-keys", json={"name": "shop", "scopes": ["consent:read"]})
    assert created.status_code == 201

    code, out, err = await cli(
        consent_db, "create-tenant", "--name", "X", "--tenant-id", str(tenant_id)
    )
    assert code == 1
    assert "exists already" in err
    assert await db.fetchval("SELECT count(*) FROM tenants WHERE id = $1", tenant_id) == 1


async def test_create_api_key_recovers_a_tenant(consent_db: str, client_for: ClientFor) -> None:
    code, out, _ = await cli(consent_db, "create-tenant", "--name", "Lost Keys Ltd")
    assert code == 0
    tenant_id = printed(out)["tenant_id"]

    code, out, err = await cli(
        consent_db,
        "create-api-key",
        "--tenant-id",
        tenant_id,
        "--name",
        "reader",
        "--scope",
        "consent:read",
        "--scope",
        "audit:read",
    )
    assert code == 0, out + err
    values = printed(out)
    assert values["tenant_id"] == tenant_id
    assert values["scopes"] == "audit:read consent:read"
    api = client_for(values["api_key"])
    assert (await api.get("/v1/subjects/nobody/consents")).status_code == 404
    assert (await api.get("/v1/api-keys")).status_code == 403

    code, _, err = await cli(
        consent_db,
        "create-api-key",
        "--tenant-id",
        str(uuid.uuid4()),
        "--name",
        "n",
        "--scope",
        "admin",
    )
    assert code == 1
    assert "no tenant" in err
    code, _, err = await cli(
        consent_db, "create-api-key", "--tenant-id", tenant_id, "--name", "n", "--scope", "root"
    )
    assert code == 2  # typer refuses a scope that does not exist
    code, _, err = await cli(
        consent_db, "create-api-key", "--tenant-id", tenant_id, "--name", " ", "--scope", "admin"
    )
    assert code == 1
    assert "name" in err


async def test_the_commands_refuse_the_development_master_key_in_production(
    consent_db: str,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consentry.consent",
        "create-tenant",
        "--name",
        "Prod",
        env={
            **os.environ,
            "CONSENTRY_DATABASE_URL": consent_db,
            "CONSENTRY_ENVIRONMENT": "production",
            "CONSENTRY_DIRECTORY_KEY": "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",  # not dev
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert "consent_master_key is refused outside development" in err.decode()


@pytest_asyncio.fixture
async def owned_database(
    fresh_database: Callable[[str], Awaitable[str]], pg_server_dsn: str
) -> AsyncIterator[tuple[str, str]]:
    """A fresh database owned by a non-superuser role: (superuser DSN, owner DSN)."""
    superuser = await asyncpg.connect(pg_server_dsn)
    try:
        exists = await superuser.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", OWNER_ROLE)
        if not exists:
            # CREATEROLE: migration 0002 creates the group role when the cluster lacks it.
            await superuser.execute(f"CREATE ROLE {OWNER_ROLE} LOGIN CREATEROLE")
        # Group roles are cluster-wide: other tests' migrations (as a superuser) may have
        # created them already. Give the owner the ADMIN option PostgreSQL 16 gives a
        # CREATEROLE creator (`WITH ADMIN OPTION`: the syntax PostgreSQL 15 knows too).
        for role in await superuser.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'consentry\\_consent\\_%' "
            "AND NOT rolcanlogin"
        ):
            await superuser.execute(f'GRANT "{role["rolname"]}" TO {OWNER_ROLE} WITH ADMIN OPTION')
        dsn = await fresh_database("consent_owned")
        name = urlsplit(dsn).path.lstrip("/")
        await superuser.execute(f'ALTER DATABASE "{name}" OWNER TO {OWNER_ROLE}')
    finally:
        await superuser.close()
    yield dsn, with_user(dsn, OWNER_ROLE)


async def test_a_non_superuser_owner_runs_the_key_migrations_and_keys_resolve(
    owned_database: tuple[str, str], sealer: Sealer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migrations up to 0003 as a non-superuser owner, whom FORCE binds to the tenant policy:
    tenant creation and key resolution work, and the owner sees no tenant's keys unscoped."""
    superuser_dsn, owner_dsn = owned_database
    mine = [m for m in migrations() if m.namespace != "consent" or m.version <= 3]
    await migrate_dsn(owner_dsn, mine)
    monkeypatch.setattr(
        tenants, "TENANT_SEEDERS", []
    )  # later migrations' seeders need their tables
    owner = await asyncpg.connect(owner_dsn)
    try:
        assert not await owner.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )
        async with owner.transaction():
            tenant_id = await tenants.create_tenant(owner, sealer=sealer, name="Owned")
            key = await create_key(
                owner, tenant_id=tenant_id, name="k", scopes=[Scope.ADMIN], created_by_key=None
            )
        assert await owner.fetchval("SELECT count(*) FROM api_keys") == 0  # FORCE: owner too
        resolved = await owner.fetchrow(
            "SELECT tenant_id FROM consentry_resolve_api_key($1)", key.id
        )
        assert resolved is not None
        assert resolved["tenant_id"] == tenant_id
    finally:
        await owner.close()

    await ensure_login_role(superuser_dsn, APP_ROLE, GROUP_ROLE)
    pool = await asyncpg.create_pool(with_user(superuser_dsn, APP_ROLE), min_size=1, max_size=2)
    assert pool is not None
    try:
        principal = await DbKeyResolver(pool).resolve(key.key)
    finally:
        await pool.close()
    assert principal is not None
    assert principal.tenant_id == tenant_id
    assert principal.scopes == {"admin"}


async def test_a_non_superuser_owner_runs_every_migration_and_the_commands(
    owned_database: tuple[str, str],
) -> None:
    """The production shape: FORCE makes RLS bind the owner too; everything still works."""
    superuser_dsn, owner_dsn = owned_database
    code, out, err = await cli(owner_dsn, "migrate")
    assert code == 0, out + err
    code, out, err = await cli(owner_dsn, "create-tenant", "--name", "Owned", "--scope", "admin")
    assert code == 0, out + err
    values = printed(out)

    owner = await asyncpg.connect(owner_dsn)
    try:
        assert not await owner.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )
        assert await owner.fetchval("SELECT count(*) FROM api_keys") == 0  # FORCE: owner too
        resolved = await owner.fetchrow(
            "SELECT tenant_id FROM consentry_resolve_api_key($1)", values["api_key_id"]
        )
        assert resolved is not None
        assert str(resolved["tenant_id"]) == values["tenant_id"]
    finally:
        await owner.close()

    await ensure_login_role(superuser_dsn, APP_ROLE, GROUP_ROLE)
    settings = ApiSettings(database_url=with_user(superuser_dsn, APP_ROLE), environment="test")
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://consent",
            headers={"Authorization": f"Bearer {values['api_key']}"},
        ) as api,
    ):
        me = await api.get("/v1/tenant")
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "Owned"
        assert (await api.get("/v1/api-keys")).json()[0]["id"] == values["api_key_id"]
        assert (
            await api.get("/v1/tenant", headers={"Authorization": "Bearer consentry-dev-key"})
        ).status_code == 401
