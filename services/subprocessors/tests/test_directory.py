"""The directory follower (ADR 0008, `consentry.eventing.replica`): tenants and API keys
announced by the consent service reach this service through the real broker and database
(as the application's role: RLS applies), and the announced keys work on its API."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from consentry.eventing import topics
from consentry.eventing.testing import (
    Record,
    api_key_issued,
    api_key_revoked,
    collect,
    header,
    new_api_key,
    produce,
    running,
    tenant_provisioned,
)
from consentry.subprocessors.directory.follower import run_directory
from consentry.subprocessors.settings import DirectorySettings

from .conftest import _client, eventually, recipient_body

pytestmark = pytest.mark.integration
SCOPES = ["subprocessors:read", "subprocessors:admin"]


def follower(settings: DirectorySettings) -> contextlib.AbstractAsyncContextManager[None]:
    """The follower in this process while the block runs (its crash fails the test)."""
    return running(run_directory, settings)


@pytest.fixture
def settings(app_dsn: str, kafka_bootstrap: str) -> DirectorySettings:
    """The follower as in production: the application's role, a group of its own."""
    return DirectorySettings(
        database_url=app_dsn,
        kafka_bootstrap_servers=kafka_bootstrap,
        environment="test",
        directory_group_id=f"sd-{uuid.uuid4().hex[:10]}",
    )


async def _status(client: httpx.AsyncClient) -> int:
    return (await client.get("/v1/recipients")).status_code


async def _tenant(db: asyncpg.Connection, tenant_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant_id)


async def test_a_key_the_consent_service_issued_works_here_until_revoked(
    settings: DirectorySettings,
    kafka_bootstrap: str,
    db: asyncpg.Connection,
    subprocessors_app: FastAPI,
) -> None:
    tenant_id = uuid.uuid4()
    key_id, key = new_api_key()
    at = datetime(2026, 11, 2, 8, tzinfo=UTC)
    async with _client(subprocessors_app, key) as client, follower(settings):
        assert await _status(client) == 401  # not announced yet

        # The key arrives before its tenant: authenticated, but the tenant is not here yet.
        await produce(kafka_bootstrap, [api_key_issued(tenant_id, key, SCOPES, at=at)])
        waiting = await eventually(lambda: client.get("/v1/recipients"), _answered)
        assert waiting.status_code == 503
        assert waiting.headers["retry-after"] == "1"
        assert waiting.json()["type"] == "urn:consentry:problem:tenant-not-provisioned"
        assert await _tenant(db, tenant_id) is None

        await produce(kafka_bootstrap, [tenant_provisioned(tenant_id, secrets.token_bytes(32))])
        await eventually(lambda: _status(client), lambda status: status == 200)
        created = await client.post(
            "/v1/recipients", json=recipient_body("Billing AB", "https://billing.example/hook")
        )
        assert created.status_code == 201, created.text
        listed = (await client.get("/v1/recipients")).json()["recipients"]
        assert [r["name"] for r in listed] == ["Billing AB"]
        tenant = await _tenant(db, tenant_id)
        assert tenant is not None
        assert (tenant["name"], tenant["provisioned_at"]) == (
            "Acme Learning AB",
            datetime(2026, 11, 1, tzinfo=UTC),
        )
        # No subject key, wrapped or not, is kept here.
        assert set(tenant.keys()) == {"id", "name", "provisioned_at", "recorded_at"}

        # Announced again (publish-directory), renamed: only the name changes.
        await produce(
            kafka_bootstrap,
            [
                tenant_provisioned(
                    tenant_id,
                    secrets.token_bytes(32),
                    name="Acme AB",
                    at=datetime(2026, 12, 1, tzinfo=UTC),
                )
            ],
        )
        await eventually(lambda: _tenant(db, tenant_id), lambda row: _named(row, "Acme AB"))
        again = await _tenant(db, tenant_id)
        assert again is not None
        assert again["provisioned_at"] == tenant["provisioned_at"]

        # Revoked in the consent service: refused here too.
        await produce(kafka_bootstrap, [api_key_revoked(tenant_id, key_id, at=at + timedelta(1))])
        await eventually(lambda: _status(client), lambda status: status == 401)
    row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
    assert row is not None
    assert (row["tenant_id"], row["revoked_at"]) == (tenant_id, at + timedelta(1))
    assert sorted(row["scopes"]) == sorted(SCOPES)


def _answered(response: httpx.Response) -> bool:
    return response.status_code != 401


def _named(row: asyncpg.Record | None, name: str) -> bool:
    return row is not None and row["name"] == name


async def test_a_key_id_of_another_tenant_is_dead_lettered(
    settings: DirectorySettings,
    kafka_bootstrap: str,
    db: asyncpg.Connection,
    subprocessors_app: FastAPI,
) -> None:
    mine, other = uuid.uuid4(), uuid.uuid4()
    foreign_id, foreign = new_api_key()
    last_id, last = new_api_key()
    at = datetime(2026, 11, 4, tzinfo=UTC)
    # `other`'s key first, and applied, before `mine` claims it: the two tenants' events
    # travel on different partitions, in no order relative to each other.
    await produce(
        kafka_bootstrap,
        [
            tenant_provisioned(other, secrets.token_bytes(32)),
            api_key_issued(other, foreign, SCOPES, at=at),
        ],
    )

    def ours(record: Record) -> bool:
        return (record.key or b"").split(b"/")[0].decode() == str(mine)

    async with follower(settings):
        await eventually(
            lambda: db.fetchval("SELECT count(*) FROM api_keys WHERE id = $1", foreign_id),
            lambda count: count == 1,
        )
        await produce(
            kafka_bootstrap,
            [
                tenant_provisioned(mine, secrets.token_bytes(32)),
                api_key_issued(mine, foreign, ["subprocessors:admin"], at=at),  # not mine
                api_key_revoked(mine, foreign_id, at=at),  # not mine to revoke either
                api_key_issued(mine, last, SCOPES, at=at),  # after all that: still applied
            ],
        )
        dead = await collect(
            kafka_bootstrap,
            topics.dead_letter_topic(settings.directory_group_id),
            lambda kept: len(kept) >= 2,
            keep=ours,
            seconds=40,
        )
        await eventually(
            lambda: db.fetchval("SELECT count(*) FROM api_keys WHERE id = $1", last_id),
            lambda count: count == 1,
        )
    assert [header(record, "dlq.reason") for record in dead] == ["api-key-tenant-mismatch"] * 2
    assert {header(record, "dlq.consumer") for record in dead} == {settings.directory_group_id}
    foreign_row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", foreign_id)
    assert foreign_row is not None
    assert (foreign_row["tenant_id"], foreign_row["revoked_at"]) == (other, None)
    # The other tenant's key still works, for the other tenant.
    async with _client(subprocessors_app, foreign) as client:
        assert await _status(client) == 200
