"""The purposes API against a real PostgreSQL: seeded defaults, create/update, rules, scopes."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from consentry.consent.db import set_tenant
from consentry.consent.purposes.models import DEFAULT_PURPOSES
from consentry.consent.purposes.service import seed_default_purposes

from .conftest import TENANT_ID, ClientFor, MakeTenant

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"
DEFAULTS = {
    "required": ("legitimate-interest", False, True),
    "performance": ("consent", True, False),
    "functionality": ("consent", True, False),
    "targeting": ("consent", True, False),
    "joint-marketing": ("consent", True, False),
    "transfer-outside-eea": ("consent", True, False),
    "marketing-email": ("consent", True, False),
}


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"] == PROBLEM, response.text
    slug: str = response.json()["type"]
    return slug.removeprefix("urn:consentry:problem:")


async def test_a_tenant_starts_with_the_default_purposes(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/purposes")
    assert response.status_code == 200, response.text
    purposes = {p["name"]: p for p in response.json()["purposes"]}
    assert {
        name: (p["legal_basis"], p["requires_consent"], p["always_on"])
        for name, p in purposes.items()
    } == DEFAULTS
    assert set(DEFAULTS) == set(DEFAULT_PURPOSES)  # the Python constant matches the seed
    assert purposes["required"]["title"] == "Strictly necessary"


async def test_seeding_is_idempotent_and_keeps_the_tenants_changes(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    changed = await client.put(
        "/v1/purposes/performance",
        json={"title": "Analytics", "legal_basis": "legitimate-interest"},
    )
    assert changed.status_code == 200, changed.text
    async with db.transaction():
        await set_tenant(db, TENANT_ID)
        await seed_default_purposes(db, TENANT_ID)
        await seed_default_purposes(db, TENANT_ID)
    listed = (await client.get("/v1/purposes")).json()["purposes"]
    assert len(listed) == len(DEFAULTS)
    performance = next(p for p in listed if p["name"] == "performance")
    assert (performance["title"], performance["requires_consent"]) == ("Analytics", False)


async def test_new_tenants_are_seeded_and_see_only_their_own_purposes(
    client: httpx.AsyncClient, make_tenant: MakeTenant, client_for: ClientFor
) -> None:
    await client.put("/v1/purposes/only-dev", json={"title": "Dev", "legal_basis": "consent"})
    other = await make_tenant("Other Org")
    response = await client_for(other.key).get("/v1/purposes")
    assert response.status_code == 200
    names = {p["name"] for p in response.json()["purposes"]}
    assert names == set(DEFAULTS)
    missing = await client_for(other.key).get("/v1/purposes/only-dev")
    assert missing.status_code == 404
    assert problem_type(missing) == "purpose-not-found"


async def test_create_then_update_a_purpose(client: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {
        "title": "Product research",
        "description": "Interviews about the product.",
        "legal_basis": "consent",
    }
    created = await client.put("/v1/purposes/product-research", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["requires_consent"] is True
    assert created.json()["always_on"] is False

    updated = await client.put(
        "/v1/purposes/product-research", json={**body, "legal_basis": "contract"}
    )
    assert updated.status_code == 200
    assert updated.json()["requires_consent"] is False
    assert updated.json()["created_at"] == created.json()["created_at"]
    assert updated.json()["updated_at"] >= created.json()["updated_at"]

    read = await client.get("/v1/purposes/product-research")
    assert read.json() == updated.json()


async def test_required_stays_always_on(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    response = await client.put(
        "/v1/purposes/required",
        json={"title": "Necessary", "legal_basis": "contract", "always_on": False},
    )
    assert response.status_code == 422
    assert problem_type(response) == "purpose-always-on"
    # The legal basis and texts may change, as long as it stays always on.
    ok = await client.put(
        "/v1/purposes/required",
        json={"title": "Necessary", "legal_basis": "contract", "always_on": True},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["always_on"] is True
    # The database refuses it too, whatever the application does.
    async with db.transaction():
        await set_tenant(db, TENANT_ID)
        with pytest.raises(asyncpg.CheckViolationError):
            await db.execute(
                "UPDATE purposes SET always_on = false WHERE tenant_id = $1 AND name = 'required'",
                TENANT_ID,
            )


async def test_an_always_on_purpose_cannot_rest_on_consent(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/purposes/security",
        json={"title": "Security", "legal_basis": "consent", "always_on": True},
    )
    assert response.status_code == 422
    assert problem_type(response) == "always-on-needs-other-basis"
    assert (await client.get("/v1/purposes/security")).status_code == 404


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/purposes/Bad_Name", {"title": "x", "legal_basis": "consent"}),
        ("/v1/purposes/ok", {"title": "", "legal_basis": "consent"}),
        ("/v1/purposes/ok", {"title": "x", "legal_basis": "because"}),
        ("/v1/purposes/ok", {"title": "x", "legal_basis": "consent", "requires_consent": False}),
        ("/v1/purposes/ok", {"title": "x"}),
    ],
)
async def test_invalid_purposes_are_refused(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    response = await client.put(path, json=body)
    assert response.status_code == 422
    assert problem_type(response) == "validation-error"
    assert (await client.get("/v1/purposes/ok")).status_code == 404


async def test_scopes(
    make_tenant: MakeTenant, client_for: ClientFor, client: httpx.AsyncClient
) -> None:
    reader = await make_tenant("Readers", scopes=["consent:read"])
    as_reader = client_for(reader.key)
    assert (await as_reader.get("/v1/purposes")).status_code == 200
    refused = await as_reader.put("/v1/purposes/x", json={"title": "x", "legal_basis": "consent"})
    assert refused.status_code == 403
    assert problem_type(refused) == "forbidden"
    assert refused.json()["scope"] == "policy:admin"

    admin = await make_tenant("Admins", scopes=["policy:admin"])
    as_admin = client_for(admin.key)
    created = await as_admin.put("/v1/purposes/x", json={"title": "x", "legal_basis": "consent"})
    assert created.status_code == 201
    cannot_read = await as_admin.get("/v1/purposes")
    assert cannot_read.status_code == 403
    assert cannot_read.json()["scope"] == "consent:read"

    assert (await client_for(None).get("/v1/purposes")).status_code == 401
