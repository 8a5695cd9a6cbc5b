"""The list API (members, filter, delivery key) over list state written by the processor's
own code (`service.apply_events`), as the application's role: RLS applies."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import FastAPI

from consentry.eventing import catalogue
from consentry.eventing.db import set_tenant
from consentry.eventing.envelope import Event
from consentry.eventing.testing import outbox_events
from consentry.httpapi.auth import Scope
from consentry.preferences.app import create_app
from consentry.preferences.lists import service
from consentry.preferences.lists.views import router
from consentry.preferences.settings import ApiSettings
from consentry.preferences.v1 import lists_pb2

from .conftest import API_KEY, TENANT_ID, ref_of
from .test_lists_helpers import consent, joined, new_ref, received, unsubscribed

pytestmark = pytest.mark.integration
NEWS = "product-news"


@pytest_asyncio.fixture
async def app_conn(app_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the application's role (RLS applies)."""
    conn = await asyncpg.connect(app_dsn)
    yield conn
    await conn.close()


async def apply(conn: asyncpg.Connection, events: list[Event]) -> service.Applied:
    """Apply events as the processor does (one transaction)."""
    async with conn.transaction():
        return await service.apply_events(conn, received(events))


def subscribed_member(ref: str, *, tenant: uuid.UUID = TENANT_ID) -> list[Event]:
    return [consent(tenant, ref, 1, given=True), joined(tenant, ref, 1, [(NEWS, "email")])]


@contextlib.asynccontextmanager
async def client_for(settings: ApiSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of another instance of the API, with `settings`."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://preferences.test",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as client,
    ):
        yield client


async def page_through(client: httpx.AsyncClient, url: str, **params: Any) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = []
    after = None
    for _ in range(1000):
        query = {**params, **({"after": after} if after else {})}
        response = await client.get(url, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        members += page["members"]
        after = page["next"]
        if after is None:
            return members
    raise AssertionError("paging does not end")


async def test_members_are_paged_and_only_the_sendable_ones(
    client: httpx.AsyncClient, topics: list[str], app_conn: asyncpg.Connection
) -> None:
    sendable = sorted(new_ref() for _ in range(2500))
    left, withdrawn, no_consent, other_channel = (new_ref() for _ in range(4))
    events = [event for ref in sendable for event in subscribed_member(ref)]
    events += [
        *subscribed_member(left),
        joined(TENANT_ID, left, 2, [(NEWS, "email")], subscribed=False),
        unsubscribed(TENANT_ID, left, 2, NEWS, ["email"]),
        *subscribed_member(withdrawn),
        consent(TENANT_ID, withdrawn, 2, given=False),
        joined(TENANT_ID, no_consent, 1, [(NEWS, "email")]),
        consent(TENANT_ID, other_channel, 1, given=True),
        joined(TENANT_ID, other_channel, 1, [(NEWS, "sms")]),
    ]
    await apply(app_conn, events)

    response = await client.get(f"/v1/lists/{NEWS}/members")
    assert response.status_code == 200
    first = response.json()
    assert (first["topic"], first["channel"], len(first["members"])) == (NEWS, "email", 1000)
    assert first["next"] == first["members"][-1]["subject_ref"]
    members = await page_through(client, f"/v1/lists/{NEWS}/members", channel="email")
    assert [m["subject_ref"] for m in members] == sendable
    assert all(m["contact"] is None for m in members)  # none kept for these subjects
    small = await page_through(client, f"/v1/lists/{NEWS}/members", limit=97)
    assert [m["subject_ref"] for m in small] == sendable
    sms = await page_through(client, f"/v1/lists/{NEWS}/members", channel="sms")
    assert [m["subject_ref"] for m in sms] == [other_channel]


async def test_contact_opens_with_the_delivery_key(
    client: httpx.AsyncClient, topics: list[str], app_conn: asyncpg.Connection
) -> None:
    alice, bob = ref_of("alice"), ref_of("bob")
    response = await client.put("/v1/subjects/alice/contact", json={"email": "alice@example.se"})
    assert response.status_code == 204, response.text
    await apply(
        app_conn,
        [
            *subscribed_member(alice),
            *subscribed_member(bob),
            joined(TENANT_ID, alice, 2, [(NEWS, "sms")]),
        ],
    )
    members = await page_through(client, f"/v1/lists/{NEWS}/members")
    contacts = {m["subject_ref"]: m["contact"] for m in members}
    assert contacts[bob] is None
    sealed = contacts[alice]
    assert isinstance(sealed, str)
    assert "alice" not in sealed

    response = await client.get("/v1/delivery-key")
    assert response.status_code == 200
    document = response.json()
    key = base64.b64decode(document["key"])
    assert len(key) == 32
    assert document["algorithm"] == "AES-256-GCM"
    # Decrypted with nothing but the documented layout and a stock AES-GCM.
    raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    assert raw[0] == 1
    plain = AESGCM(key).decrypt(raw[1:13], raw[13:], f"{TENANT_ID}/{alice}".encode())
    assert plain == b"alice@example.se"

    sms = await page_through(client, f"/v1/lists/{NEWS}/members", channel="sms")
    assert sms == [{"subject_ref": alice, "contact": None}]  # only e-mail lists carry it


async def test_filter_checks_ten_thousand_refs(
    client: httpx.AsyncClient,
    topics: list[str],
    app_conn: asyncpg.Connection,
    api_settings: ApiSettings,
) -> None:
    groups = {
        name: [new_ref() for _ in range(count)]
        for name, count in (
            ("sendable", 6000),
            ("unsubscribed", 1000),
            ("consent-withdrawn", 1000),
            ("erased", 500),
            ("no-consent", 500),
            ("not-subscribed", 1000),
        )
    }
    events = [e for ref in groups["sendable"] for e in subscribed_member(ref)]
    for ref in groups["unsubscribed"]:
        events += [*subscribed_member(ref), unsubscribed(TENANT_ID, ref, 2)]
    for ref in groups["consent-withdrawn"]:
        events += [*subscribed_member(ref), consent(TENANT_ID, ref, 2, given=False)]
    events += [e for ref in groups["erased"] for e in subscribed_member(ref)]
    events += [joined(TENANT_ID, ref, 1, [(NEWS, "email")]) for ref in groups["no-consent"]]
    events += [consent(TENANT_ID, ref, 1, given=True) for ref in groups["not-subscribed"]]
    await apply(app_conn, events)
    async with app_conn.transaction():
        await set_tenant(app_conn, TENANT_ID)
        for ref in groups["erased"]:
            assert await service.suppress_erased(app_conn, TENANT_ID, ref)

    proposed = [ref for refs in groups.values() for ref in refs]
    proposed = proposed[::2] + proposed[1::2]  # mixed up
    body = {"channel": "email", "subject_refs": [*proposed, *proposed[:100]]}
    # Once from the list's in-memory copy (the default), once from the database alone.
    async with client_for(api_settings.model_copy(update={"list_cache_max_refs": 0})) as plain:
        answers = [await client.post(f"/v1/lists/{NEWS}/filter", json=body)]
        answers.append(await plain.post(f"/v1/lists/{NEWS}/filter", json=body))
    assert len(answers[0].request.content) > 64 * 1024  # above the default body limit
    assert answers[0].status_code == answers[1].status_code == 200, answers[0].text[:500]
    answer = answers[0].json()
    assert answers[1].json() == answer
    assert answer["sendable"] == [ref for ref in proposed if ref in set(groups["sendable"])]
    reasons = {item["subject_ref"]: item["reason"] for item in answer["suppressed"]}
    assert len(answer["suppressed"]) == len(reasons) == 4000
    for name, refs in groups.items():
        if name != "sendable":
            assert {reasons[ref] for ref in refs} == {name}


async def test_the_list_copy_is_never_stale(
    client: httpx.AsyncClient,
    topics: list[str],
    app_conn: asyncpg.Connection,
    db: asyncpg.Connection,
    preferences_app: FastAPI,
) -> None:
    stays, leaves, joins = new_ref(), new_ref(), new_ref()
    await apply(app_conn, [*subscribed_member(stays), *subscribed_member(leaves)])

    async def check() -> dict[str, Any]:
        response = await client.post(
            f"/v1/lists/{NEWS}/filter", json={"subject_refs": [stays, leaves, joins]}
        )
        assert response.status_code == 200
        answer: dict[str, Any] = response.json()
        return answer

    assert (await check())["sendable"] == [stays, leaves]  # the copy is made
    cache = preferences_app.state.list_cache
    assert (cache.loads, cache.refreshes) == (1, 0)
    await apply(app_conn, [unsubscribed(TENANT_ID, leaves, 2), *subscribed_member(joins)])
    answer = await check()  # changes since the copy's generation are applied first
    assert answer == {
        "sendable": [stays, joins],
        "suppressed": [{"subject_ref": leaves, "reason": "unsubscribed"}],
    }
    assert (cache.loads, cache.refreshes) == (1, 1)
    # Changes pruned past the copy's generation: the copy is loaded again.
    await db.execute("UPDATE list_generations SET pruned_through = generation + 1")
    await apply(app_conn, [consent(TENANT_ID, joins, 2, given=False)])
    answer = await check()
    assert answer["sendable"] == [stays]
    assert cache.loads == 2


async def test_filter_and_members_refusals(
    client: httpx.AsyncClient, topics: list[str], api_settings: ApiSettings
) -> None:
    body = {"subject_refs": [new_ref()]}
    cases: list[tuple[str, str, Any, int, str]] = [
        ("post", "/v1/lists/no-such-topic/filter", body, 404, "list-not-found"),
        ("get", "/v1/lists/no-such-topic/members", None, 404, "list-not-found"),
        ("post", "/v1/lists/receipts/filter", body, 422, "not-a-marketing-list"),
        ("get", "/v1/lists/receipts/members", None, 422, "not-a-marketing-list"),
        (
            "post",
            f"/v1/lists/{NEWS}/filter",
            {**body, "channel": "push"},
            422,
            "channel-not-offered",
        ),
        ("post", f"/v1/lists/{NEWS}/filter", {"subject_refs": []}, 422, "validation-error"),
        ("post", f"/v1/lists/{NEWS}/filter", {"subject_refs": "x"}, 422, "validation-error"),
        ("post", f"/v1/lists/{NEWS}/filter", {**body, "extra": 1}, 422, "validation-error"),
    ]
    for method, url, document, status, slug in cases:
        response = await client.request(method, url, json=document)
        assert (response.status_code, response.json()["type"]) == (
            status,
            f"urn:consentry:problem:{slug}",
        ), (url, document, response.text)
    response = await client.post(f"/v1/lists/{NEWS}/filter", content=b"{not json")
    assert response.status_code == 422

    secret = "someone@example.se"
    bad = [new_ref() for _ in range(50)] + [secret] * 50
    response = await client.post(f"/v1/lists/{NEWS}/filter", json={"subject_refs": bad})
    assert response.status_code == 422
    problem = response.json()
    assert secret not in response.text  # the input is never echoed
    assert len(problem["errors"]) == 20
    assert problem["errors"][0]["location"] == ["body", "subject_refs", "50"]

    # More refs than the setting allows (at its lowest, 10,000).
    async with client_for(api_settings.model_copy(update={"filter_max_refs": 10_000})) as small:
        response = await small.post(
            f"/v1/lists/{NEWS}/filter", json={"subject_refs": [new_ref() for _ in range(10_001)]}
        )
        assert response.status_code == 422
        assert response.json()["type"] == "urn:consentry:problem:too-many-refs"
        assert response.json()["max_refs"] == 10_000
    # A body over the filter's own limit (here its lowest, 1 MiB).
    limited = api_settings.model_copy(update={"filter_max_body_bytes": 1024 * 1024})
    async with client_for(limited) as small:
        refs = [new_ref() for _ in range(16_000)]  # ~1.1 MB of JSON
        response = await small.post(f"/v1/lists/{NEWS}/filter", json={"subject_refs": refs})
        assert response.status_code == 413
        assert response.json()["type"] == "urn:consentry:problem:payload-too-large"


async def test_erased_is_for_good(
    client: httpx.AsyncClient,
    topics: list[str],
    app_conn: asyncpg.Connection,
    db: asyncpg.Connection,
) -> None:
    ref = new_ref()
    await apply(app_conn, subscribed_member(ref))
    async with app_conn.transaction():
        await set_tenant(app_conn, TENANT_ID)
        assert await service.suppress_erased(app_conn, TENANT_ID, ref) is True
        assert await service.suppress_erased(app_conn, TENANT_ID, ref) is False  # idempotent
    # Late events (consent again, a subscription) do not bring the subject back.
    await apply(
        app_conn,
        [consent(TENANT_ID, ref, 9, given=True), joined(TENANT_ID, ref, 9, [(NEWS, "email")])],
    )
    response = await client.post(f"/v1/lists/{NEWS}/filter", json={"subject_refs": [ref]})
    assert response.json() == {
        "sendable": [],
        "suppressed": [{"subject_ref": ref, "reason": "erased"}],
    }
    events = await outbox_events(db, catalogue.LIST_MEMBER_SUPPRESSED)
    assert [(e.subject_ref, e.message.reason) for e in events] == [  # type: ignore[attr-defined]
        (ref, lists_pb2.SUPPRESSION_REASON_ERASED)
    ]


async def test_lists_are_tenant_isolated(
    client: httpx.AsyncClient, topics: list[str], app_conn: asyncpg.Connection
) -> None:
    other = uuid.uuid4()
    mine, theirs = new_ref(), new_ref()
    await apply(app_conn, [*subscribed_member(mine), *subscribed_member(theirs, tenant=other)])
    members = await page_through(client, f"/v1/lists/{NEWS}/members")
    assert [m["subject_ref"] for m in members] == [mine]
    response = await client.post(f"/v1/lists/{NEWS}/filter", json={"subject_refs": [theirs]})
    assert response.json()["suppressed"] == [{"subject_ref": theirs, "reason": "no-consent"}]
    async with app_conn.transaction():
        await set_tenant(app_conn, TENANT_ID)
        rows = await app_conn.fetch("SELECT DISTINCT tenant_id FROM list_members")
    assert [row["tenant_id"] for row in rows] == [TENANT_ID]  # RLS, whatever the query says


def test_routes_need_their_scopes() -> None:
    wanted = {
        "/v1/lists/{topic}/members": Scope.LISTS_READ.value,
        "/v1/lists/{topic}/filter": Scope.LISTS_READ.value,
        "/v1/delivery-key": Scope.ADMIN.value,
    }
    found = {}
    for route in router.routes:
        path = getattr(route, "path", "")
        for dependant in route.dependant.dependencies:  # type: ignore[attr-defined]
            for inner in [dependant, *dependant.dependencies]:
                scope = getattr(inner.call, "scope", None)
                if scope:
                    found[path] = scope
    assert found == wanted
