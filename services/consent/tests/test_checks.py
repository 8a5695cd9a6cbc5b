"""Checks for product code: one pair, and batches of up to 10,000 pairs."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from consentry.consent.db import set_tenant

from .conftest import TENANT_ID, MakeTenant

pytestmark = pytest.mark.integration
POLICY = "2026-01"


async def test_single_check_reasons(client: httpx.AsyncClient, published_policy: str) -> None:
    await client.post(
        "/v1/subjects/s-1/consents",
        json={
            "purposes": {"performance": "given", "targeting": "withdrawn"},
            "policy_version": POLICY,
        },
    )
    expected = {
        "performance": {"allowed": True, "reason": "given"},
        "targeting": {"allowed": False, "reason": "withdrawn"},
        "functionality": {"allowed": False, "reason": "no-consent"},
        "required": {"allowed": True, "reason": "legal-basis"},
        "astrology": {"allowed": False, "reason": "unknown-purpose"},
    }
    for purpose, answer in expected.items():
        response = await client.get(f"/v1/subjects/s-1/checks/{purpose}")
        assert response.status_code == 200, response.text
        assert response.json() == answer, purpose
    unknown = await client.get("/v1/subjects/never-seen/checks/performance")
    assert unknown.json() == {"allowed": False, "reason": "no-consent"}


async def test_batch_check_of_10000_pairs(client: httpx.AsyncClient, published_policy: str) -> None:
    for n in range(50):
        status = "given" if n % 2 == 0 else "withdrawn"
        response = await client.post(
            f"/v1/subjects/b-{n}/consents",
            json={"purposes": {"performance": status}, "policy_version": POLICY},
        )
        assert response.status_code == 200
    refs = {
        n: (await client.get(f"/v1/subjects/b-{n}/consents")).json()["subject_ref"]
        for n in range(2)
    }
    checks = []
    expected = []
    for i in range(10_000):
        n = i % 100  # b-0..b-49 decided, b-50..b-99 never seen
        purpose = "performance" if i % 3 else "required"
        if purpose == "required":
            expected.append("legal-basis")
        elif n >= 50:
            expected.append("no-consent")
        else:
            expected.append("given" if n % 2 == 0 else "withdrawn")
        if n < 2 and i % 7 == 0:  # some pairs by pseudonymous ref instead of id
            checks.append({"subject_ref": refs[n], "purpose": purpose})
        else:
            checks.append({"subject_id": f"b-{n}", "purpose": purpose})
    response = await client.post("/v1/checks", json={"checks": checks}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    results = response.json()["results"]
    assert [r["reason"] for r in results] == expected
    assert all(r["allowed"] == (r["reason"] in ("given", "legal-basis")) for r in results)


async def test_batch_check_limits(client: httpx.AsyncClient, published_policy: str) -> None:
    too_many = [{"subject_id": "x", "purpose": "performance"}] * 10_001
    response = await client.post("/v1/checks", json={"checks": too_many}, timeout=60)
    assert response.status_code in (413, 422)
    assert response.headers["content-type"] == "application/problem+json"
    both = await client.post(
        "/v1/checks",
        json={"checks": [{"subject_id": "x", "subject_ref": "a" * 64, "purpose": "performance"}]},
    )
    assert both.status_code == 422


async def test_the_check_function_stays_inside_the_tenant(
    client: httpx.AsyncClient,
    published_policy: str,
    app_conn: asyncpg.Connection,
    make_tenant: MakeTenant,
) -> None:
    await client.put(
        "/v1/subjects/s-9/consents/performance",
        json={"status": "given", "policy_version": POLICY},
    )
    ref = (await client.get("/v1/subjects/s-9/consents")).json()["subject_ref"]
    other = await make_tenant("Other Org")
    query = "SELECT status FROM consentry_check_consents($1, ARRAY[$2], ARRAY['performance'])"
    assert await app_conn.fetchval(query, TENANT_ID, ref) == "given"
    assert await app_conn.fetchval(query, other.tenant_id, ref) is None  # RLS still applies
    async with app_conn.transaction():
        await set_tenant(app_conn, other.tenant_id)
        assert await app_conn.fetchval(query, TENANT_ID, ref) == "given"
        # the caller's own tenant scope is put back afterwards
        assert await app_conn.fetchval("SELECT consentry_tenant()") == other.tenant_id
