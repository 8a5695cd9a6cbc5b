"""API keys over HTTP: shown once, stored hashed, scoped, revocable, isolated per tenant."""

from __future__ import annotations

import hashlib
import re

import asyncpg
import pytest
from fastapi import FastAPI, routing
from fastapi.routing import APIRoute

from consentry.httpapi.auth import ALL_SCOPES

from .conftest import TENANT_ID, ClientFor, MakeKey, MakeTenant

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"
KEY_FORMAT = re.compile(r"^csk_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$")


async def test_a_new_key_is_shown_once_and_stored_only_hashed(
    make_tenant: MakeTenant, client_for: ClientFor, db: asyncpg.Connection
) -> None:
    admin = await make_tenant("Acme", scopes=["admin"])
    api = client_for(admin.key)

    response = await api.post(
        "/v1/api-keys", json={"name": "web shop", "scopes": ["consent:write", "consent:read"]}
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    match = KEY_FORMAT.match(created["key"])
    assert match is not None
    assert match[1] == created["id"]
    assert created["scopes"] == ["consent:read", "consent:write"]
    assert created["name"] == "web shop"
    assert created["revoked_at"] is None
    assert created["created_by_key"] == admin.key_id

    listed = await api.get("/v1/api-keys")
    assert listed.status_code == 200
    assert {key["id"] for key in listed.json()} == {admin.key_id, created["id"]}
    assert all("key" not in key for key in listed.json())
    assert match[2] not in listed.text

    # The table holds the secret's SHA-256 and nothing from which the key can be rebuilt.
    row = await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", created["id"])
    assert row is not None
    assert row["secret_hash"] == hashlib.sha256(match[2].encode()).digest()
    dump = repr([dict(r) for r in await db.fetch("SELECT * FROM api_keys")])
    assert match[2] not in dump
    assert created["key"] not in dump

    # The new key works for what it may do.
    me = await client_for(created["key"]).get("/v1/tenant")
    assert me.status_code == 200
    assert me.json()["id"] == str(admin.tenant_id)
    assert me.json()["name"] == "Acme"


async def test_a_revoked_key_is_refused_at_once(
    make_tenant: MakeTenant, make_key: MakeKey, client_for: ClientFor, db: asyncpg.Connection
) -> None:
    admin = await make_tenant(scopes=["admin"])
    reader = await make_key(admin.tenant_id, scopes=["consent:read"])
    api, user = client_for(admin.key), client_for(reader.key)
    assert (await user.get("/v1/tenant")).status_code == 200  # now cached by the resolver

    assert (await api.delete(f"/v1/api-keys/{reader.key_id}")).status_code == 204
    refused = await user.get("/v1/tenant")
    assert refused.status_code == 401
    assert refused.json()["type"] == "urn:consentry:problem:unauthenticated"

    first = await db.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", reader.key_id)
    assert first is not None
    assert (await api.delete(f"/v1/api-keys/{reader.key_id}")).status_code == 204  # again: fine
    assert (
        await db.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", reader.key_id) == first
    )
    listed = {key["id"]: key for key in (await api.get("/v1/api-keys")).json()}
    assert listed[reader.key_id]["revoked_at"] is not None
    assert listed[admin.key_id]["revoked_at"] is None


async def test_another_tenants_key_is_not_found(
    make_tenant: MakeTenant, client_for: ClientFor
) -> None:
    a = await make_tenant("A", scopes=["admin"])
    b = await make_tenant("B", scopes=["admin"])
    api_b = client_for(b.key)

    response = await api_b.delete(f"/v1/api-keys/{a.key_id}")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:consentry:problem:api-key-not-found"
    assert (await api_b.delete("/v1/api-keys/nosuchkeyatall22")).status_code == 404

    assert [key["id"] for key in (await api_b.get("/v1/api-keys")).json()] == [b.key_id]
    assert (await client_for(a.key).get("/v1/api-keys")).status_code == 200  # still valid


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": ["consent:read"], "tenant_id": str(TENANT_ID)},
        {"name": "x", "scopes": ["consent:read"], "id": "aaaaaaaaaaaaaaaa"},
        {"name": "x", "scopes": ["consent:read"], "secret_hash": "00"},
        {"name": "x", "scopes": ["consent:read"], "key": "csk_mine"},
        {"name": "x", "scopes": ["consent:read"], "created_by_key": "dev"},
        {"name": "x", "scopes": ["root"]},
        {"name": "x", "scopes": []},
        {"name": "x"},
        {"name": "", "scopes": ["admin"]},
        {"name": "tab\there", "scopes": ["admin"]},
        {"name": "x" * 101, "scopes": ["admin"]},
    ],
)
async def test_bad_or_over_specified_key_requests_are_refused(
    make_tenant: MakeTenant, client_for: ClientFor, db: asyncpg.Connection, body: object
) -> None:
    admin = await make_tenant(scopes=["admin"])
    response = await client_for(admin.key).post("/v1/api-keys", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "urn:consentry:problem:validation-error"
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 1  # the admin key only


def _route_scopes(app: FastAPI) -> dict[tuple[str, str], str]:
    """(method, path) -> the scope its `require(scope)` dependency demands."""
    found: dict[tuple[str, str], str] = {}
    for context in routing.iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        pending = list(route.dependant.dependencies)
        while pending:
            dependency = pending.pop()
            scope = getattr(dependency.call, "scope", None)
            if scope is not None:
                for method in route.methods or ():
                    found[(method, context.path_format or route.path)] = scope
            pending.extend(dependency.dependencies)
    return found


async def test_every_scoped_route_refuses_a_key_without_its_scope(
    consent_app: FastAPI, make_tenant: MakeTenant, make_key: MakeKey, client_for: ClientFor
) -> None:
    routes = _route_scopes(consent_app)
    assert routes[("POST", "/v1/api-keys")] == "admin"
    assert routes[("GET", "/v1/api-keys")] == "admin"
    assert routes[("DELETE", "/v1/api-keys/{key_id}")] == "admin"
    assert routes[("GET", "/v1/subjects/{subject_id}/consents")] == "consent:read"
    tenant = await make_tenant()
    for (method, path), scope in sorted(routes.items()):
        others = await make_key(tenant.tenant_id, scopes=ALL_SCOPES - {scope})
        url = re.sub(r"\{[^}]+\}", "x", path)
        response = await client_for(others.key).request(method, url, json={})
        assert response.status_code == 403, (method, path, response.text)
        problem = response.json()
        assert problem["type"] == "urn:consentry:problem:forbidden"
        assert problem["scope"] == scope


async def test_admin_does_not_imply_the_other_scopes(
    make_tenant: MakeTenant, client_for: ClientFor
) -> None:
    admin = await make_tenant(scopes=["admin"])
    response = await client_for(admin.key).get("/v1/subjects/u/consents")
    assert response.status_code == 403
    assert response.json()["scope"] == "consent:read"


async def test_any_valid_key_reads_its_tenant_and_nothing_else_does(
    make_tenant: MakeTenant, client_for: ClientFor
) -> None:
    reader = await make_tenant("Reader Org", scopes=["audit:read"])
    response = await client_for(reader.key).get("/v1/tenant")
    assert response.status_code == 200
    assert response.json()["id"] == str(reader.tenant_id)
    assert response.json()["name"] == "Reader Org"

    match = KEY_FORMAT.match(reader.key)
    assert match is not None
    wrong_secret = f"csk_{match[1]}_{'A' * 43}"
    for key in (None, "nonsense", wrong_secret, reader.key + "x", "csk_" + "a" * 16 + "_"):
        refused = await client_for(key).get("/v1/tenant")
        assert refused.status_code == 401, key
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert (await client_for(reader.key).get("/v1/tenant")).status_code == 200


async def test_the_dev_key_still_works_and_names_its_tenant(client_for: ClientFor) -> None:
    from .conftest import API_KEY

    response = await client_for(API_KEY).get("/v1/tenant")
    assert response.status_code == 200
    assert response.json()["id"] == str(TENANT_ID)
    assert response.json()["name"] == "development"
    created = await client_for(API_KEY).post(
        "/v1/api-keys", json={"name": "made with the dev key", "scopes": ["consent:read"]}
    )
    assert created.status_code == 201
    assert created.json()["created_by_key"] == "dev"


async def test_openapi_documents_the_key_routes_with_examples(client_for: ClientFor) -> None:
    spec = (await client_for(None).get("/openapi.json")).json()
    assert set(spec["paths"]["/v1/api-keys"]) == {"get", "post"}
    assert "delete" in spec["paths"]["/v1/api-keys/{key_id}"]
    assert "get" in spec["paths"]["/v1/tenant"]
    schemas = spec["components"]["schemas"]
    assert schemas["ApiKeyCreate"]["examples"]
    assert schemas["CreatedApiKey"]["examples"][0]["key"].startswith("csk_")
    assert schemas["ApiKeyCreate"]["additionalProperties"] is False
