"""The tenant directory (ADR 0008): tenants, API keys and revocations are announced through the
outbox in the transaction that makes them, and `publish-directory` announces them all again."""

from __future__ import annotations

import asyncio
import hashlib
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
from starlette.datastructures import State

from consentry.consent.keys.service import revoke_key
from consentry.consent.sealing import Sealer
from consentry.consent.tenants.service import create_tenant, ensure_tenant
from consentry.eventing import catalogue
from consentry.eventing.directory import (
    DEV_DIRECTORY_KEY,
    DirectoryKeySettings,
    pseudonymise,
    subject_key_context,
)
from consentry.eventing.envelope import ReceivedEvent
from consentry.eventing.sealing import SealingError
from consentry.eventing.testing import outbox_events
from consentry.httpapi.problems import Problem
from consentry.tenant.v1 import tenant_pb2

from .conftest import TENANT_ID

pytestmark = pytest.mark.integration
DIRECTORY_TYPES = (
    catalogue.TENANT_PROVISIONED,
    catalogue.API_KEY_ISSUED,
    catalogue.API_KEY_REVOKED,
)
OWNER_ROLE = "consentry_test_owner"  # a non-superuser database owner, as in production


@pytest.fixture
def directory() -> Sealer:
    """The directory key's sealer of the test settings (what other services unwrap with)."""
    return DirectoryKeySettings(
        environment="test", directory_key=DEV_DIRECTORY_KEY
    ).directory_sealer()


async def directory_events(db: asyncpg.Connection) -> list[ReceivedEvent]:
    return await outbox_events(db, *DIRECTORY_TYPES)


async def outbox_bytes(db: asyncpg.Connection) -> bytes:
    """Every outbox row's payload and headers, for checking no secret is in any of them."""
    rows = await db.fetch("SELECT payload, headers::text AS headers FROM eventing_outbox")
    return b"".join(row["payload"] + row["headers"].encode() for row in rows)


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


def secret_of(key: str) -> str:
    """The secret part of `csk_<id>_<secret>` (the id is 16 characters)."""
    return key.removeprefix("csk_")[17:]


async def test_the_api_announces_its_tenant_keys_and_revocations(
    client: httpx.AsyncClient,
    app_state: State,
    db: asyncpg.Connection,
    directory: Sealer,
    subject_key: bytes,
    sealer: Sealer,
) -> None:
    # The dev tenant, created at start-up, was announced with its subject key wrapped.
    (provisioned,) = await directory_events(db)
    assert provisioned.type is catalogue.TENANT_PROVISIONED
    assert provisioned.key == f"{TENANT_ID}/tenant".encode()
    assert provisioned.subject_ref == "tenant"
    message = provisioned.message
    assert isinstance(message, tenant_pb2.TenantProvisioned)
    assert message.tenant_id == str(TENANT_ID)
    assert message.name == "development"
    created_at = await db.fetchval("SELECT created_at FROM tenants WHERE id = $1", TENANT_ID)
    assert message.provisioned_at.ToDatetime().timestamp() == pytest.approx(created_at.timestamp())
    unwrapped = directory.open(message.wrapped_subject_key, context=subject_key_context(TENANT_ID))
    assert unwrapped == subject_key
    with pytest.raises(SealingError):  # bound to its tenant: useless under another id
        directory.open(message.wrapped_subject_key, context=subject_key_context(uuid.uuid4()))
    with pytest.raises(SealingError):  # and not the master key's sealing
        sealer.open(message.wrapped_subject_key, context=subject_key_context(TENANT_ID))
    # Another service unwrapping it derives the refs the consent service derives.
    ids = ["Anna@Example.se", "user-42"]
    refs = await client.post("/v1/subject-refs", json={"subject_ids": ids})
    assert refs.status_code == 200, refs.text
    assert refs.json()["subject_refs"] == [pseudonymise(unwrapped, i) for i in ids]

    # Starting again (ensure_tenant) creates nothing and announces nothing.
    async with db.transaction():
        assert not await ensure_tenant(
            db, sealer=sealer, tenant_id=TENANT_ID, name="development", directory=directory
        )
    assert len(await directory_events(db)) == 1

    created = await client.post(
        "/v1/api-keys", json={"name": "shop", "scopes": ["preferences:read", "consent:read"]}
    )
    assert created.status_code == 201, created.text
    key = created.json()
    revoked = await client.delete(f"/v1/api-keys/{key['id']}")
    assert revoked.status_code == 204
    again = await client.delete(f"/v1/api-keys/{key['id']}")  # again: announced again
    assert again.status_code == 204

    _, issued, first, second = await directory_events(db)
    assert [e.type for e in (issued, first, second)] == [
        catalogue.API_KEY_ISSUED,
        catalogue.API_KEY_REVOKED,
        catalogue.API_KEY_REVOKED,
    ]
    assert {e.key for e in (issued, first, second)} == {f"{TENANT_ID}/tenant".encode()}
    assert isinstance(issued.message, tenant_pb2.ApiKeyIssued)
    assert issued.message.key_id == key["id"]
    assert list(issued.message.scopes) == ["consent:read", "preferences:read"]
    assert issued.message.secret_sha256 == hashlib.sha256(secret_of(key["key"]).encode()).digest()
    row = await db.fetchrow("SELECT secret_hash, revoked_at FROM api_keys WHERE id = $1", key["id"])
    assert row is not None
    assert issued.message.secret_sha256 == row["secret_hash"]
    for event in (first, second):
        assert isinstance(event.message, tenant_pb2.ApiKeyRevoked)
        assert event.message.key_id == key["id"]
        # A second revocation keeps (and announces) the first time.
        revoked_at = event.message.revoked_at.ToDatetime().timestamp()
        assert revoked_at == pytest.approx(row["revoked_at"].timestamp())

    # No clear subject key, no secret, anywhere in the outbox.
    published = await outbox_bytes(db)
    assert subject_key not in published
    assert secret_of(key["key"]).encode() not in published
    assert key["key"].encode() not in published


async def test_revoking_an_unknown_key_announces_nothing(
    app_state: State, db: asyncpg.Connection
) -> None:
    before = len(await directory_events(db))
    with pytest.raises(Problem) as refused:
        await revoke_key(app_state.pool, tenant_id=TENANT_ID, key_id="a" * 16)
    assert refused.value.slug == "api-key-not-found"
    assert len(await directory_events(db)) == before


async def test_a_rolled_back_creation_announces_nothing(
    db: asyncpg.Connection, sealer: Sealer, directory: Sealer
) -> None:
    tenant_id = uuid.uuid4()

    class AbortError(Exception):
        pass

    with pytest.raises(AbortError):
        async with db.transaction():
            await create_tenant(
                db, sealer=sealer, name="Gone", tenant_id=tenant_id, directory=directory
            )
            assert len(await directory_events(db)) == 1  # queued in this transaction...
            raise AbortError
    assert await directory_events(db) == []  # ...and gone with it
    assert await db.fetchval("SELECT count(*) FROM tenants WHERE id = $1", tenant_id) == 0


async def test_the_commands_announce_tenants_and_keys(
    consent_db: str, db: asyncpg.Connection, directory: Sealer, sealer: Sealer
) -> None:
    code, out, err = await cli(consent_db, "create-tenant", "--name", "Acme Learning AB")
    assert code == 0, out + err
    first = printed(out)
    tenant_id = uuid.UUID(first["tenant_id"])
    code, out, err = await cli(
        consent_db,
        "create-api-key",
        "--tenant-id",
        str(tenant_id),
        "--name",
        "lists",
        "--scope",
        "lists:read",
    )
    assert code == 0, out + err
    second = printed(out)

    provisioned, issued_first, issued_second = await directory_events(db)
    assert [provisioned.type, issued_first.type, issued_second.type] == [
        catalogue.TENANT_PROVISIONED,
        catalogue.API_KEY_ISSUED,
        catalogue.API_KEY_ISSUED,
    ]
    assert all(e.tenant_id == str(tenant_id) for e in (provisioned, issued_first, issued_second))
    assert isinstance(provisioned.message, tenant_pb2.TenantProvisioned)
    sealed = await db.fetchval("SELECT subject_key_sealed FROM tenants WHERE id = $1", tenant_id)
    stored_key = sealer.open(sealed, context=subject_key_context(tenant_id))
    wrapped = provisioned.message.wrapped_subject_key
    assert directory.open(wrapped, context=subject_key_context(tenant_id)) == stored_key
    for event, values in ((issued_first, first), (issued_second, second)):
        assert isinstance(event.message, tenant_pb2.ApiKeyIssued)
        assert event.message.key_id == values["api_key_id"]
        assert " ".join(event.message.scopes) == values["scopes"]
        secret = secret_of(values["api_key"])
        assert event.message.secret_sha256 == hashlib.sha256(secret.encode()).digest()
    published = await outbox_bytes(db)
    assert stored_key not in published
    assert all(secret_of(v["api_key"]).encode() not in published for v in (first, second))


@pytest_asyncio.fixture
async def owned_database(
    fresh_database: Callable[[str], Awaitable[str]], pg_server_dsn: str
) -> AsyncIterator[tuple[str, str]]:
    """A fresh database owned by a non-superuser role: (superuser DSN, owner DSN)."""
    from consentry.devstack.postgres import with_user

    superuser = await asyncpg.connect(pg_server_dsn)
    try:
        exists = await superuser.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", OWNER_ROLE)
        if not exists:
            await superuser.execute(f"CREATE ROLE {OWNER_ROLE} LOGIN CREATEROLE")
        for role in await superuser.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'consentry\\_consent\\_%' "
            "AND NOT rolcanlogin"
        ):
            await superuser.execute(f'GRANT "{role["rolname"]}" TO {OWNER_ROLE} WITH ADMIN OPTION')
        dsn = await fresh_database("consent_dir")
        name = urlsplit(dsn).path.lstrip("/")
        await superuser.execute(f'ALTER DATABASE "{name}" OWNER TO {OWNER_ROLE}')
    finally:
        await superuser.close()
    yield dsn, with_user(dsn, OWNER_ROLE)


async def test_publish_directory_announces_everything_again_as_a_non_superuser_owner(
    owned_database: tuple[str, str], directory: Sealer, sealer: Sealer
) -> None:
    """The production shape: FORCE binds the owner to the tenant policy, and the command still
    finds every tenant (migration 0008) and every key with its hash."""
    superuser_dsn, owner_dsn = owned_database
    code, out, err = await cli(owner_dsn, "migrate")
    assert code == 0, out + err
    tenants: dict[uuid.UUID, list[dict[str, str]]] = {}
    for name in ("One AB", "Two AB"):
        code, out, err = await cli(owner_dsn, "create-tenant", "--name", name)
        assert code == 0, out + err
        values = printed(out)
        tenant_id = uuid.UUID(values["tenant_id"])
        code, out, err = await cli(
            owner_dsn, "create-api-key", "--tenant-id", str(tenant_id), "--name", "r",
            "--scope", "consent:read",
        )  # fmt: skip
        assert code == 0, out + err
        tenants[tenant_id] = [values, printed(out)]
    one, two = tenants
    revoked_key = tenants[one][1]["api_key_id"]

    db = await asyncpg.connect(superuser_dsn)
    try:
        pool = await asyncpg.create_pool(owner_dsn, min_size=1, max_size=1)
        assert pool is not None
        try:
            await revoke_key(pool, tenant_id=one, key_id=revoked_key)
        finally:
            await pool.close()
        # As after a broker that lost its data (and a relay that published and pruned).
        await db.execute("DELETE FROM eventing_outbox")

        code, out, err = await cli(owner_dsn, "publish-directory")
        assert code == 0, out + err
        assert printed(out) == {"tenants": "2", "api_keys": "4", "revocations": "1"}
        events = await directory_events(db)
        assert len(events) == 7
        for tenant_id, created in tenants.items():
            mine = [e for e in events if e.tenant_id == str(tenant_id)]
            assert all(e.key == f"{tenant_id}/tenant".encode() for e in mine)
            kinds = [e.type for e in mine]
            revocations = 1 if tenant_id == one else 0
            # In order: the tenant, its keys, then its revocations.
            assert kinds == [
                catalogue.TENANT_PROVISIONED,
                catalogue.API_KEY_ISSUED,
                catalogue.API_KEY_ISSUED,
                *[catalogue.API_KEY_REVOKED] * revocations,
            ]
            provisioned = mine[0].message
            assert isinstance(provisioned, tenant_pb2.TenantProvisioned)
            sealed = await db.fetchval(
                "SELECT subject_key_sealed FROM tenants WHERE id = $1", tenant_id
            )
            stored = sealer.open(sealed, context=subject_key_context(tenant_id))
            context = subject_key_context(tenant_id)
            assert directory.open(provisioned.wrapped_subject_key, context=context) == stored
            issued = {
                e.message.key_id: e.message.secret_sha256
                for e in mine
                if isinstance(e.message, tenant_pb2.ApiKeyIssued)
            }
            assert issued == {
                values["api_key_id"]: hashlib.sha256(secret_of(values["api_key"]).encode()).digest()
                for values in created
            }
        (revocation,) = [e for e in events if e.type is catalogue.API_KEY_REVOKED]
        assert revocation.tenant_id == str(one)
        assert isinstance(revocation.message, tenant_pb2.ApiKeyRevoked)
        assert revocation.message.key_id == revoked_key
        assert two not in {
            uuid.UUID(e.tenant_id) for e in events if e.type is catalogue.API_KEY_REVOKED
        }

        # Again: the same announcements once more (consumers treat repeats as no-ops).
        code, out, err = await cli(owner_dsn, "publish-directory")
        assert code == 0, out + err
        assert len(await directory_events(db)) == 14
    finally:
        await db.close()
