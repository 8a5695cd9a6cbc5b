"""The recipient registry over HTTP: create (secret shown once, sealed at rest), read,
change, deactivate, rotate; validation as problem+json; tenants isolated (404)."""

from __future__ import annotations

import base64
import uuid

import asyncpg
import httpx
import pytest

from consentry.eventing.sealing import Sealer
from consentry.httpapi.problems import Problem
from consentry.subprocessors import signing
from consentry.subprocessors.recipients.service import check_target, secret_context
from consentry.subprocessors.settings import DEV_SUBPROCESSORS_MASTER_KEY

from .conftest import KeyedClient, recipient_body, register

HOOK = "https://hooks.acme.example/consentry"


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["type"] == f"urn:consentry:problem:{slug}", body
    return body


async def test_create_shows_the_secret_once_and_seals_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, tenant: uuid.UUID
) -> None:
    response = await client.post(
        "/v1/recipients",
        json=recipient_body(
            "Acme Payments AB",
            HOOK,
            purposes=["targeting", "joint-marketing", "targeting"],
            region="se",
        ),
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    created = response.json()
    assert created["region"] == "SE"
    assert created["outside_eea"] is False
    assert created["purposes"] == ["joint-marketing", "targeting"]
    assert created["active"] is True
    secret = signing.parse_secret(created["signing_secret"])
    assert len(secret) == 32

    # Never shown again, and only sealed at rest (bound to tenant and recipient).
    recipient_id = uuid.UUID(created["id"])
    fetched = (await client.get(f"/v1/recipients/{recipient_id}")).json()
    assert "signing_secret" not in fetched
    listed = (await client.get("/v1/recipients")).json()["recipients"]
    assert [r["id"] for r in listed] == [created["id"]]
    assert all(not {"signing_secret", "secret_sealed"} & set(r) for r in listed)
    sealed = await db.fetchval("SELECT secret_sealed FROM recipients WHERE id = $1", recipient_id)
    assert secret not in sealed
    assert base64.b64encode(secret) not in sealed
    sealer = Sealer(base64.b64decode(DEV_SUBPROCESSORS_MASTER_KEY))
    assert sealer.open(sealed, context=secret_context(tenant, recipient_id)) == secret


async def test_outside_eea_follows_the_region(client: httpx.AsyncClient) -> None:
    for region, outside in (("US", True), ("NO", False), ("IS", False), ("GB", True)):
        created = await register(client, f"Partner {region}", HOOK, region=region)
        assert created["outside_eea"] is outside, region


async def test_change_deactivate_reactivate(client: httpx.AsyncClient) -> None:
    created = await register(client, "Billing Co", HOOK, role="billing")
    path = f"/v1/recipients/{created['id']}"
    changed = await client.patch(path, json={"purposes": ["targeting"], "region": "US"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["purposes"] == ["targeting"]
    assert body["outside_eea"] is True
    assert body["name"] == "Billing Co"  # untouched

    gone = await client.delete(path)
    assert gone.status_code == 200
    assert gone.json()["active"] is False
    assert gone.json()["deactivated_at"] is not None
    assert (await client.get("/v1/recipients", params={"active": "true"})).json()[
        "recipients"
    ] == []
    # The name is free again while the first one is inactive; reactivating it collides.
    await register(client, "Billing Co", HOOK)
    _problem(await client.patch(path, json={"active": True}), 409, "recipient-name-taken")


async def test_name_taken(client: httpx.AsyncClient) -> None:
    await register(client, "Acme", HOOK)
    response = await client.post("/v1/recipients", json=recipient_body("acme", HOOK))
    _problem(response, 409, "recipient-name-taken")


async def test_rotation_keeps_the_previous_secret_for_a_while(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    created = await register(client, "Affiliate", HOOK, role="affiliate")
    response = await client.post(f"/v1/recipients/{created['id']}/rotate-secret")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    rotated = response.json()
    assert rotated["signing_secret"] != created["signing_secret"]
    assert rotated["previous_secret_valid_until"] is not None
    row = await db.fetchrow(
        "SELECT previous_secret_sealed, secret_rotated_at FROM recipients WHERE id = $1",
        uuid.UUID(created["id"]),
    )
    assert row is not None
    assert row["previous_secret_sealed"] is not None
    assert row["secret_rotated_at"] is not None


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"role": "reseller"}, "role"),
        ({"region": "SWE"}, "region"),
        ({"webhook_url": "ftp://hooks.example/x"}, "webhook_url"),
        ({"webhook_url": "https://user:pw@hooks.example/x"}, "webhook_url"),
        ({"purposes": ["Not A Purpose"]}, "purposes"),
        ({"secret": "whsec_mine"}, "secret"),
    ],
)
async def test_invalid_registrations(
    client: httpx.AsyncClient, body: dict[str, object], location: str
) -> None:
    response = await client.post("/v1/recipients", json={**recipient_body("X", HOOK), **body})
    problem = _problem(response, 422, "validation-error")
    assert any(location in error["location"] for error in problem["errors"])  # type: ignore[attr-defined]


async def test_plain_http_only_to_loopback(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/recipients", json=recipient_body("Plain", "http://hooks.example/x")
    )
    assert _problem(response, 422, "webhook-url-not-allowed")["reason"] == "not-https"
    await register(client, "Local", "http://127.0.0.1:9/hooks")  # a local test receiver


def test_production_refuses_non_public_targets() -> None:
    for url in (
        "https://localhost/x",
        "https://127.0.0.1/x",
        "https://10.1.2.3/x",
        "https://[fd00::1]/x",
        "https://169.254.169.254/latest",
        "http://127.0.0.1:8080/x",
    ):
        with pytest.raises(Problem) as caught:
            check_target(url, loopback_http_allowed=False)
        assert caught.value.slug == "webhook-url-not-allowed", url
    check_target("https://hooks.acme.example/x", loopback_http_allowed=False)
    check_target("https://93.184.216.34/x", loopback_http_allowed=False)


async def test_patch_refuses_null_and_unknown_fields(client: httpx.AsyncClient) -> None:
    created = await register(client, "Acme", HOOK)
    path = f"/v1/recipients/{created['id']}"
    _problem(await client.patch(path, json={"name": None}), 422, "validation-error")
    _problem(await client.patch(path, json={"secret_sealed": "x"}), 422, "validation-error")


async def test_tenants_are_isolated(client: httpx.AsyncClient, keyed_client: KeyedClient) -> None:
    mine = await register(client, "Acme", HOOK)
    other = await keyed_client(uuid.uuid4(), ["subprocessors:read", "subprocessors:admin"])
    path = f"/v1/recipients/{mine['id']}"
    _problem(await other.get(path), 404, "recipient-not-found")
    _problem(await other.patch(path, json={"name": "Mine now"}), 404, "recipient-not-found")
    _problem(await other.delete(path), 404, "recipient-not-found")
    _problem(await other.post(f"{path}/rotate-secret"), 404, "recipient-not-found")
    assert (await other.get("/v1/recipients")).json()["recipients"] == []
    # ...and the other tenant's own recipient does not show up here.
    theirs = await register(other, "Acme", HOOK)
    listed = (await client.get("/v1/recipients")).json()["recipients"]
    assert [r["id"] for r in listed] == [mine["id"]]
    assert theirs["id"] != mine["id"]
    assert (await client.get(path)).json()["name"] == "Acme"


async def test_scopes(
    keyed_client: KeyedClient, tenant: uuid.UUID, public: httpx.AsyncClient
) -> None:
    reader = await keyed_client(tenant, ["subprocessors:read"])
    assert (await reader.get("/v1/recipients")).status_code == 200
    problem = _problem(
        await reader.post("/v1/recipients", json=recipient_body("X", HOOK)), 403, "forbidden"
    )
    assert problem["scope"] == "subprocessors:admin"
    _problem(await public.get("/v1/recipients"), 401, "unauthenticated")
    other = await keyed_client(tenant, ["consent:read"])
    _problem(await other.get("/v1/recipients"), 403, "forbidden")
