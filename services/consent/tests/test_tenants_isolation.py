"""Tenant isolation: the API answers 404 across tenants, and PostgreSQL's row-level security
holds even for a query that forgets its tenant. Subject keys are sealed at rest."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from starlette.datastructures import State

from consentry.consent.sealing import Sealer, SealingError
from consentry.consent.tenants import service as tenants
from consentry.consent.tenants.service import (
    TENANT_SEEDERS,
    TenantExistsError,
    create_tenant,
    ensure_tenant,
    pseudonymise,
    subject_key_context,
)
from consentry.eventing.db import Connection

from .conftest import ClientFor, MakeTenant, TenantKey

pytestmark = pytest.mark.integration
SUBJECT = "alice@example.com"


async def subject_key(db: asyncpg.Connection, sealer: Sealer, tenant_id: uuid.UUID) -> bytes:
    sealed = await db.fetchval("SELECT subject_key_sealed FROM tenants WHERE id = $1", tenant_id)
    return sealer.open(sealed, context=subject_key_context(tenant_id))


async def record_consent(
    db: asyncpg.Connection, sealer: Sealer, tenant_id: uuid.UUID, subject_id: str, purpose: str
) -> str:
    """A given consent written as the service would (as the owner); returns the subject ref."""
    ref = pseudonymise(await subject_key(db, sealer, tenant_id), subject_id)
    event_id = uuid.uuid4()
    async with db.transaction():
        await db.execute("SELECT set_config('consentry.tenant_id', $1, true)", str(tenant_id))
        await db.execute(
            "INSERT INTO subjects (tenant_id, subject_ref, version) VALUES ($1, $2, 1)",
            tenant_id,
            ref,
        )
        await db.execute(
            "INSERT INTO consent_ledger (event_id, tenant_id, subject_ref, subject_version, "
            "purpose, status, policy_version, method, occurred_at) "
            "VALUES ($1, $2, $3, 1, $4, 'given', '1', 'api', $5)",
            event_id,
            tenant_id,
            ref,
            purpose,
            datetime.now(UTC),
        )
        await db.execute(
            "INSERT INTO consents (tenant_id, subject_ref, purpose, status, policy_version, "
            "method, occurred_at, subject_version, event_id) "
            "VALUES ($1, $2, $3, 'given', '1', 'api', $4, 1, $5)",
            tenant_id,
            ref,
            purpose,
            datetime.now(UTC),
            event_id,
        )
    return ref


async def two_tenants_with_a_consent(
    make_tenant: MakeTenant, db: asyncpg.Connection, sealer: Sealer
) -> tuple[TenantKey, TenantKey, str]:
    a = await make_tenant("A", scopes=["consent:read", "admin"])
    b = await make_tenant("B", scopes=["consent:read", "admin"])
    ref = await record_consent(db, sealer, a.tenant_id, SUBJECT, "performance")
    return a, b, ref


async def test_another_tenants_subject_is_not_found(
    make_tenant: MakeTenant, db: asyncpg.Connection, sealer: Sealer, client_for: ClientFor
) -> None:
    a, b, ref = await two_tenants_with_a_consent(make_tenant, db, sealer)

    mine = await client_for(a.key).get(f"/v1/subjects/{SUBJECT}/consents")
    assert mine.status_code == 200, mine.text
    assert mine.json()["subject_ref"] == ref  # the API pseudonymises with the unsealed key
    assert [c["purpose"] for c in mine.json()["consents"]] == ["performance"]

    theirs = await client_for(b.key).get(f"/v1/subjects/{SUBJECT}/consents")
    assert theirs.status_code == 404
    assert theirs.json()["type"] == "urn:consentry:problem:subject-not-found"
    assert ref not in theirs.text


async def test_row_level_security_without_a_tenant_shows_nothing(
    make_tenant: MakeTenant, db: asyncpg.Connection, sealer: Sealer, app_conn: asyncpg.Connection
) -> None:
    await two_tenants_with_a_consent(make_tenant, db, sealer)
    assert not await app_conn.fetchval(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    for table in ("tenants", "subjects", "consent_ledger", "consents", "api_keys"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") > 0, table
        assert await app_conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_row_level_security_keeps_a_tenant_to_its_own_rows(
    make_tenant: MakeTenant, db: asyncpg.Connection, sealer: Sealer, app_conn: asyncpg.Connection
) -> None:
    a, b, ref = await two_tenants_with_a_consent(make_tenant, db, sealer)
    await record_consent(db, sealer, b.tenant_id, "bob", "targeting")
    async with app_conn.transaction():
        await app_conn.execute(
            "SELECT set_config('consentry.tenant_id', $1, true)", str(b.tenant_id)
        )
        # No tenant filter in these queries: the policies alone keep A's rows out.
        for table in ("subjects", "consent_ledger", "consents", "api_keys"):
            rows = await app_conn.fetch(f"SELECT tenant_id FROM {table}")
            assert rows, table
            assert {row["tenant_id"] for row in rows} == {b.tenant_id}, table
        assert (
            await app_conn.fetchval("SELECT count(*) FROM consents WHERE subject_ref = $1", ref)
            == 0
        )
        assert [r["id"] for r in await app_conn.fetch("SELECT id FROM tenants")] == [b.tenant_id]
        revoked = await app_conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1", a.key_id
        )
        assert revoked == "UPDATE 0"
    assert await db.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", a.key_id) is None

    refused = [
        ("INSERT INTO subjects (tenant_id, subject_ref) VALUES ($1, 'x')", (a.tenant_id,)),
        (
            "INSERT INTO api_keys (id, tenant_id, name, scopes, secret_hash) "
            "VALUES ('aaaaaaaaaaaaaaaa', $1, 'n', '{admin}', $2)",
            (a.tenant_id, bytes(32)),
        ),
        ("UPDATE subjects SET tenant_id = $1", (a.tenant_id,)),
    ]
    for statement, args in refused:
        async with app_conn.transaction():
            await app_conn.execute(
                "SELECT set_config('consentry.tenant_id', $1, true)", str(b.tenant_id)
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await app_conn.execute(statement, *args)


async def test_the_app_role_reads_key_hashes_only_through_the_resolve_function(
    make_tenant: MakeTenant, app_conn: asyncpg.Connection
) -> None:
    a = await make_tenant()
    async with app_conn.transaction():
        await app_conn.execute(
            "SELECT set_config('consentry.tenant_id', $1, true)", str(a.tenant_id)
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.fetch("SELECT secret_hash FROM api_keys")
    async with app_conn.transaction():  # no tenant set: resolution works across tenants
        row = await app_conn.fetchrow("SELECT * FROM consentry_resolve_api_key($1)", a.key_id)
        assert row is not None
        assert row["tenant_id"] == a.tenant_id
        assert len(row["secret_hash"]) == 32
        # ... and leaves nothing behind that would show the row to later queries
        assert await app_conn.fetchval("SELECT count(*) FROM api_keys") == 0
        assert not await app_conn.fetchval(
            "SELECT current_setting('consentry.api_key_lookup', true)"
        )
    assert (
        await app_conn.fetchrow("SELECT * FROM consentry_resolve_api_key('nosuchkeyatall22')")
        is None
    )


async def test_subject_keys_are_sealed_and_open_only_for_their_tenant(
    make_tenant: MakeTenant, db: asyncpg.Connection, sealer: Sealer, app_state: State
) -> None:
    a = await make_tenant("A")
    b = await make_tenant("B")
    columns = {
        row["column_name"]
        for row in await db.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'tenants'"
        )
    }
    assert "subject_key" not in columns
    sealed_a = await db.fetchval(
        "SELECT subject_key_sealed FROM tenants WHERE id = $1", a.tenant_id
    )
    key_a = sealer.open(sealed_a, context=subject_key_context(a.tenant_id))
    assert len(key_a) == 32
    assert key_a not in sealed_a
    assert await app_state.subject_keys.get(a.tenant_id) == key_a  # what the API uses
    assert await app_state.subject_keys.get(uuid.uuid4()) is None
    with pytest.raises(SealingError):
        sealer.open(sealed_a, context=subject_key_context(b.tenant_id))
    with pytest.raises(SealingError):
        Sealer(bytes(32)).open(sealed_a, context=subject_key_context(a.tenant_id))
    # Moving A's sealed key into B's row does not give B A's key.
    async with db.transaction():
        await db.execute(
            "UPDATE tenants SET subject_key_sealed = $1 WHERE id = $2", sealed_a, b.tenant_id
        )
    with pytest.raises(SealingError):
        await tenants.SubjectKeys(app_state.pool, sealer).get(b.tenant_id)
    # And a 32-byte key in clear cannot be stored at all.
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "UPDATE tenants SET subject_key_sealed = $1 WHERE id = $2", key_a, a.tenant_id
        )


async def test_tenant_creation_runs_the_seeders_in_its_transaction(
    db: asyncpg.Connection, sealer: Sealer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[uuid.UUID, str | None]] = []

    async def seeder(conn: Connection, tenant_id: uuid.UUID) -> None:
        scoped = await conn.fetchval("SELECT current_setting('consentry.tenant_id', true)")
        seen.append((tenant_id, scoped))

    async def failing(conn: Connection, tenant_id: uuid.UUID) -> None:
        raise RuntimeError("seeding failed")

    monkeypatch.setattr(tenants, "TENANT_SEEDERS", [*TENANT_SEEDERS, seeder])
    async with db.transaction():
        created = await create_tenant(db, sealer=sealer, name="Seeded")
    assert seen[-1] == (created, str(created))

    monkeypatch.setattr(tenants, "TENANT_SEEDERS", [*TENANT_SEEDERS, seeder, failing])
    doomed = uuid.uuid4()
    with pytest.raises(RuntimeError, match="seeding failed"):
        async with db.transaction():
            await create_tenant(db, sealer=sealer, name="Doomed", tenant_id=doomed)
    assert await db.fetchval("SELECT count(*) FROM tenants WHERE id = $1", doomed) == 0


async def test_create_refuses_an_existing_id_and_ensure_keeps_the_key(
    db: asyncpg.Connection, sealer: Sealer
) -> None:
    async with db.transaction():
        tenant_id = await create_tenant(db, sealer=sealer, name="Once")
    before = await db.fetchval("SELECT subject_key_sealed FROM tenants WHERE id = $1", tenant_id)
    with pytest.raises(TenantExistsError):
        async with db.transaction():
            await create_tenant(db, sealer=sealer, name="Twice", tenant_id=tenant_id)
    async with db.transaction():
        assert not await ensure_tenant(db, sealer=sealer, tenant_id=tenant_id, name="Again")
    row = await db.fetchrow("SELECT name, subject_key_sealed FROM tenants WHERE id = $1", tenant_id)
    assert row is not None
    assert (row["name"], row["subject_key_sealed"]) == ("Once", before)
    for bad in ("", "   ", "x" * 201, "line\nbreak"):
        with pytest.raises(ValueError, match="tenant name"):
            async with db.transaction():
                await create_tenant(db, sealer=sealer, name=bad)


async def test_set_tenant_is_required_outside_a_transaction(
    db: asyncpg.Connection, sealer: Sealer
) -> None:
    with pytest.raises(RuntimeError, match="inside a transaction"):
        await create_tenant(db, sealer=sealer, name="No transaction")
