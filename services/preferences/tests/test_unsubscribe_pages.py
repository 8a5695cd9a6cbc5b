"""One-click unsubscribe (RFC 8058) through the public `/u/{token}` page, against real PostgreSQL.

Every refused link is checked to change nothing: the preferences, subjects and outbox of
every tenant are compared before and after.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin, urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from consentry.eventing import catalogue
from consentry.eventing.sealing import Sealer
from consentry.eventing.testing import outbox_events
from consentry.preferences.links import tokens
from consentry.preferences.links.tokens import LinkClaims, Purpose
from consentry.preferences.tenants import TenantKeys, load_keys
from consentry.preferences.v1 import preferences_pb2

from .conftest import TENANT_ID, provision_tenant, ref_of, set_consent

SUBJECT = "reader@example.com"
REF = ref_of(SUBJECT)
OTHER_TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000c2")
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
State = tuple[list[tuple[object, ...]], list[tuple[object, ...]], int]


@pytest_asyncio.fixture
async def visitor(preferences_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no API key, as a person's browser or a mailbox provider is."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=preferences_app), base_url="http://preferences.test"
    ) as visitor:
        yield visitor


async def _subscribed(client: httpx.AsyncClient, db: asyncpg.Connection, subject: str) -> None:
    """The subject, with marketing consent, subscribed to both marketing topics everywhere."""
    await set_consent(db, ref_of(subject), given=True)
    response = await client.patch(
        f"/v1/subjects/{subject}/preferences",
        json={
            "changes": [
                {"topic": "product-news", "subscribed": True},
                {"topic": "partner-offers", "subscribed": True},
            ]
        },
    )
    assert response.status_code == 200, response.text


async def _link(client: httpx.AsyncClient, subject: str = SUBJECT, **body: str) -> str:
    response = await client.post(f"/v1/subjects/{subject}/unsubscribe-links", json=body)
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    return urlsplit(url).path


async def _state(db: asyncpg.Connection) -> State:
    preferences = await db.fetch(
        "SELECT tenant_id, subject_ref, topic, channel, subscribed FROM preferences"
        " ORDER BY 1, 2, 3, 4"
    )
    subjects = await db.fetch(
        "SELECT tenant_id, subject_ref, version, all_marketing_unsubscribed_at FROM subjects"
        " ORDER BY 1, 2"
    )
    events = await db.fetchval("SELECT count(*) FROM eventing_outbox")
    return [tuple(r) for r in preferences], [tuple(r) for r in subjects], events


async def _subscribed_to(db: asyncpg.Connection, topic: str, tenant: uuid.UUID = TENANT_ID) -> bool:
    rows = await db.fetch(
        "SELECT subscribed FROM preferences WHERE tenant_id = $1 AND subject_ref = $2"
        " AND topic = $3",
        tenant,
        REF,
        topic,
    )
    return bool(rows) and all(row["subscribed"] for row in rows)


def _assert_page_headers(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "form-action 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "script-src" not in csp  # no script of any kind is allowed
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert "set-cookie" not in response.headers


async def test_get_shows_a_confirmation_and_changes_nothing(
    client: httpx.AsyncClient,
    visitor: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
) -> None:
    await _subscribed(client, db, SUBJECT)
    path = await _link(client, topic="product-news", locale="sv")
    before = await _state(db)
    for _ in range(2):  # link scanners fetch more than once
        page = await visitor.get(path)
        assert page.status_code == 200, page.text
    _assert_page_headers(page)
    assert '<html lang="sv">' in page.text
    assert "Produktnyheter" in page.text  # the topic's Swedish label
    assert re.search(r'<form method="post" action="[^"/]+">', page.text)  # relative: itself
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page.text
    assert "<script" not in page.text
    assert await _state(db) == before
    assert await _subscribed_to(db, "product-news")


async def test_one_click_post_unsubscribes_once_and_a_replay_is_harmless(
    client: httpx.AsyncClient,
    visitor: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
) -> None:
    await _subscribed(client, db, SUBJECT)
    path = await _link(client, topic="product-news")
    # As a mailbox provider sends it (RFC 8058 section 3.2): form-urlencoded, no cookie.
    response = await visitor.post(path, data=ONE_CLICK, headers={"Accept-Language": "en"})
    assert response.status_code == 200, response.text
    _assert_page_headers(response)
    assert "You are unsubscribed" in response.text
    assert not await _subscribed_to(db, "product-news")
    assert await _subscribed_to(db, "partner-offers")  # another topic is untouched
    after_first = await _state(db)
    for _ in range(3):
        replay = await visitor.post(path, data=ONE_CLICK)
        assert replay.status_code == 200
    assert await _state(db) == after_first
    (event,) = await outbox_events(db, catalogue.PREFERENCES_UNSUBSCRIBED)
    message = event.message
    assert isinstance(message, preferences_pb2.PreferencesUnsubscribed)
    assert message.topic == "product-news"
    assert list(message.channels) == ["email", "sms"]
    assert message.method == preferences_pb2.PREFERENCE_METHOD_ONE_CLICK
    assert event.subject_ref == REF
    # The result page leads to a working preference center (relative link).
    match = re.search(r'<a href="(\.\./p/[^"]+)">', response.text)
    assert match is not None
    center = await visitor.get(urljoin(path, match.group(1)))
    assert center.status_code == 200
    assert "Your communication preferences" in center.text


async def test_one_click_accepts_multipart_and_all_marketing(
    client: httpx.AsyncClient,
    visitor: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
) -> None:
    await _subscribed(client, db, SUBJECT)
    path = await _link(client)  # no topic: all marketing
    response = await visitor.post(path, files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200, response.text
    assert not await _subscribed_to(db, "product-news")
    assert not await _subscribed_to(db, "partner-offers")
    left = await db.fetchval(
        "SELECT all_marketing_unsubscribed_at FROM subjects WHERE subject_ref = $1", REF
    )
    assert left is not None
    (event,) = await outbox_events(db, catalogue.PREFERENCES_UNSUBSCRIBED)
    assert isinstance(event.message, preferences_pb2.PreferencesUnsubscribed)
    assert event.message.all_marketing


@pytest.mark.parametrize(
    "request_body",
    [
        {},
        {"data": {"List-Unsubscribe": "one-click"}},
        {"data": {"Unsubscribe": "One-Click"}},
        {"json": ONE_CLICK},
        {
            "content": b"List-Unsubscribe=One-Click",
            "headers": {"Content-Type": "text/plain"},
        },
        {"files": {"List-Unsubscribe": ("a.txt", b"One-Click", "text/plain")}},
        {
            "content": b"--x\r\nContent-Disposition: form-data; name=broken",
            "headers": {"Content-Type": "multipart/form-data; boundary=x"},
        },
    ],
)
async def test_a_post_without_the_one_click_body_is_refused(
    client: httpx.AsyncClient,
    visitor: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
    request_body: dict[str, object],
) -> None:
    await _subscribed(client, db, SUBJECT)
    path = await _link(client, topic="product-news")
    before = await _state(db)
    response = await visitor.post(path, **request_body)  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert await _state(db) == before


async def _keys(db: asyncpg.Connection, sealer: Sealer, tenant: uuid.UUID) -> TenantKeys:
    keys = await load_keys(db, sealer, tenant)  # the owner's connection: RLS does not apply
    assert keys is not None
    return keys


def _token(key: bytes, **claims: object) -> str:
    values: dict[str, object] = {
        "purpose": Purpose.UNSUBSCRIBE,
        "tenant_id": TENANT_ID,
        "subject_ref": REF,
        "expires_at": datetime.now(UTC) + timedelta(days=1),
        "topic": "product-news",
    }
    values.update(claims)
    return tokens.issue(key, LinkClaims(**values))  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _swap_payload(token: str, other: str) -> str:
    """`other`'s payload with `token`'s MAC (an altered link)."""
    return f"{other.partition('.')[0]}.{token.partition('.')[2]}"


async def test_forged_altered_cross_tenant_and_expired_links_change_nothing(
    client: httpx.AsyncClient,
    visitor: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
    sealer: Sealer,
) -> None:
    await _subscribed(client, db, SUBJECT)
    await _subscribed(client, db, "other@example.com")
    await provision_tenant(db, sealer, OTHER_TENANT, name="Other tenant")
    keys = await _keys(db, sealer, TENANT_ID)
    other_keys = await _keys(db, sealer, OTHER_TENANT)
    genuine = urlsplit(await _link(client, topic="product-news")).path.rsplit("/", 1)[1]
    payload, mac = genuine.split(".")
    flipped = bytearray(base64.urlsafe_b64decode(mac + "="))
    flipped[-1] ^= 0x80
    other_topic = _token(keys.link_key, topic="partner-offers")
    other_subject = _token(keys.link_key, subject_ref=ref_of("other@example.com"))
    refused = {
        "forged MAC": (f"{payload}.{_b64(bytes(flipped))}", 404),
        "no MAC": (f"{payload}.", 404),
        "other topic": (_swap_payload(genuine, other_topic), 404),
        "other subject": (_swap_payload(genuine, other_subject), 404),
        "all marketing": (_swap_payload(genuine, _token(keys.link_key, topic=None)), 404),
        "B's key claiming A": (_token(other_keys.link_key), 404),
        "unknown tenant": (_token(b"x" * 32, tenant_id=uuid.uuid4()), 404),
        "preference-center token": (
            _token(keys.link_key, purpose=Purpose.PREFERENCES, topic=None),
            404,
        ),
        "expired": (
            _token(keys.link_key, expires_at=datetime.now(UTC) - timedelta(seconds=1)),
            410,
        ),
        "garbage": ("not-a-token", 404),
    }
    before = await _state(db)
    for case, (token, status) in refused.items():
        for method in ("GET", "POST"):
            response = await visitor.request(method, f"/u/{token}", data=ONE_CLICK)
            assert response.status_code == status, (case, method)
            assert response.headers["content-type"].startswith("text/html"), case
            assert "One-Click" not in response.text, case  # no form to confirm with
    assert await _state(db) == before

    # A's token with A's topic still works; a genuine B token acts in B only, never on A.
    await db.execute(
        "INSERT INTO topics (tenant_id, name, category, channels) VALUES"
        " ($1, 'product-news', 'marketing', ARRAY['email'])",
        OTHER_TENANT,
    )
    await db.execute(
        "INSERT INTO subjects (tenant_id, subject_ref) VALUES ($1, $2)", OTHER_TENANT, REF
    )
    await db.execute(
        "INSERT INTO preferences (tenant_id, subject_ref, topic, channel, subscribed, method)"
        " VALUES ($1, $2, 'product-news', 'email', true, 'api')",
        OTHER_TENANT,
        REF,
    )
    b_token = _token(other_keys.link_key, tenant_id=OTHER_TENANT)
    response = await visitor.post(f"/u/{b_token}", data=ONE_CLICK)
    assert response.status_code == 200, response.text
    assert "Other tenant" in response.text
    assert await _subscribed_to(db, "product-news", TENANT_ID)  # A: unchanged
    b_rows = await db.fetch(
        "SELECT subscribed FROM preferences WHERE tenant_id = $1 AND subject_ref = $2",
        OTHER_TENANT,
        REF,
    )
    assert [row["subscribed"] for row in b_rows] == [False]
    events = await outbox_events(db, catalogue.PREFERENCES_UNSUBSCRIBED)
    assert [event.tenant_id for event in events] == [str(OTHER_TENANT)]


async def test_error_pages_are_localised_and_json_on_request(
    visitor: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection, sealer: Sealer
) -> None:
    swedish = await visitor.get("/u/not-a-token", headers={"Accept-Language": "sv-SE,sv;q=0.9"})
    assert swedish.status_code == 404
    assert '<html lang="sv">' in swedish.text
    assert "Länken fungerar inte" in swedish.text
    _assert_page_headers(swedish)
    english = await visitor.get("/u/not-a-token?lang=en", headers={"Accept-Language": "sv"})
    assert '<html lang="en">' in english.text
    assert "This link does not work" in english.text
    keys = await _keys(db, sealer, TENANT_ID)
    expired = _token(keys.link_key, expires_at=datetime.now(UTC) - timedelta(days=1))
    problem = await visitor.post(
        f"/u/{expired}", data=ONE_CLICK, headers={"Accept": "application/json"}
    )
    assert problem.status_code == 410
    assert problem.headers["content-type"] == "application/problem+json"
    assert problem.json()["type"] == "urn:consentry:problem:link-expired"
    invalid = await visitor.get("/u/x.y", headers={"Accept": "application/problem+json"})
    assert invalid.json()["type"] == "urn:consentry:problem:invalid-link"
    genuine = _token(keys.link_key)
    no_body = await visitor.post(f"/u/{genuine}", headers={"Accept": "application/json"})
    assert no_body.status_code == 400
    assert no_body.json()["type"] == "urn:consentry:problem:one-click-body-required"
