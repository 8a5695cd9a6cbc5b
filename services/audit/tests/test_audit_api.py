"""The audit API: verify and read the caller's tenant chain."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import pytest_asyncio

from consentry.audit.chain.hashing import leaf_hash
from consentry.audit.chain.service import append_event

from .conftest import audit_api, received

pytestmark = pytest.mark.integration
KEY = "audit-test-key-0123456789abcdef"
TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000d1")
OTHER = uuid.UUID("00000000-0000-4000-8000-0000000000d2")


@pytest_asyncio.fixture
async def client(audit_db: str) -> AsyncIterator[httpx.AsyncClient]:
    async with audit_api(audit_db, TENANT, KEY) as client:
        yield client


async def test_verify_and_page_through_own_tenant_only(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    subject = "ef" * 32
    for version in range(1, 6):
        async with db.transaction():
            await append_event(db, received(TENANT, subject, version))
    async with db.transaction():
        await append_event(db, received(OTHER, subject, 1))

    report = (await client.get("/v1/audit/verify")).json()
    assert report["ok"] is True
    assert report["entries"] == 5
    assert report["tenant_id"] == str(TENANT)

    first = (await client.get("/v1/audit/entries", params={"limit": 3})).json()
    assert [e["seq"] for e in first["entries"]] == [1, 2, 3]
    assert first["next_after_seq"] == 3
    rest = (await client.get("/v1/audit/entries", params={"after_seq": 3, "limit": 3})).json()
    assert [e["seq"] for e in rest["entries"]] == [4, 5]
    assert rest["next_after_seq"] is None
    entry = first["entries"][0]
    assert entry["leaf_hash"] == leaf_hash(base64.b64decode(entry["entry"])).hex()


async def test_bad_query_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/audit/entries", params={"limit": 0})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_no_key_is_401(client: httpx.AsyncClient) -> None:
    client.headers.pop("X-API-Key")
    assert (await client.get("/v1/audit/verify")).status_code == 401
