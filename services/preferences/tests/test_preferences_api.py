"""The preferences API: topics, per-subject preferences, unsubscribe, contact (real PostgreSQL)."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from consentry.eventing import catalogue
from consentry.eventing.testing import outbox_events
from consentry.preferences.app import create_app
from consentry.preferences.settings import ApiSettings
from consentry.preferences.v1 import preferences_pb2

from .conftest import API_KEY, MARKETING_TOPIC, TENANT_ID, ref_of, set_consent

pytestmark = pytest.mark.asyncio(loop_scope="session")
SUBJECT = "Ada.Lovelace@Example.com"
REF = ref_of(SUBJECT)


def _state(view: dict[str, object], topic: str) -> dict[str, bool]:
    topics = view["topics"]
    assert isinstance(topics, list)
    (match,) = [t for t in topics if t["topic"] == topic]
    channels: dict[str, bool] = match["channels"]
    return channels


async def test_topics_are_created_listed_and_their_category_is_fixed(
    client: httpx.AsyncClient, topics: list[str]
) -> None:
    listed = (await client.get("/v1/topics")).json()["topics"]
    assert [t["name"] for t in listed] == topics
    updated = await client.put(
        "/v1/topics/product-news", json={**MARKETING_TOPIC, "channels": ["email"]}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["channels"] == ["email"]
    flipped = await client.put(
        "/v1/topics/product-news", json={**MARKETING_TOPIC, "category": "transactional"}
    )
    assert flipped.status_code == 409
    assert flipped.json()["type"].endswith(":topic-category-fixed")
    bad = await client.put("/v1/topics/x", json={**MARKETING_TOPIC, "channels": ["fax"]})
    assert bad.status_code == 422
    assert (await client.get("/v1/topics/nope")).status_code == 404


async def test_a_new_subject_has_marketing_off_and_transactional_on(
    client: httpx.AsyncClient, topics: list[str]
) -> None:
    view = (await client.get(f"/v1/subjects/{SUBJECT}/preferences")).json()
    assert view["subject_ref"] == REF  # normalised (case-folded e-mail) and pseudonymised
    assert view["version"] == 0
    assert _state(view, "product-news") == {"email": False, "sms": False}
    assert _state(view, "receipts") == {"email": True}
    assert view["marketing_consent"] is None


async def test_joining_marketing_needs_the_marketing_consent(
    client: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    change = {"changes": [{"topic": "product-news", "channel": "email", "subscribed": True}]}
    refused = await client.patch(f"/v1/subjects/{SUBJECT}/preferences", json=change)
    assert refused.status_code == 409
    assert refused.json()["type"].endswith(":marketing-consent-required")
    assert await outbox_events(db) == []  # nothing written

    await set_consent(db, REF, given=True)
    joined = await client.patch(f"/v1/subjects/{SUBJECT}/preferences", json=change)
    assert joined.status_code == 200, joined.text
    assert _state(joined.json(), "product-news") == {"email": True, "sms": False}
    assert joined.json()["version"] == 1
    (event,) = await outbox_events(db, catalogue.PREFERENCES_UPDATED)
    assert event.subject_ref == REF
    assert event.tenant_id == str(TENANT_ID)
    message = event.message
    assert isinstance(message, preferences_pb2.PreferencesUpdated)
    assert message.subject_version == 1
    assert [(c.topic, c.channel, c.subscribed, c.category) for c in message.changes] == [
        ("product-news", "email", True, "marketing")
    ]
    assert message.method == preferences_pb2.PREFERENCE_METHOD_API


async def test_transactional_topics_cannot_be_left(
    client: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_consent(db, REF, given=True)
    change = {
        "changes": [
            {"topic": "product-news", "subscribed": True},
            {"topic": "receipts", "subscribed": False},
        ]
    }
    refused = await client.patch(f"/v1/subjects/{SUBJECT}/preferences", json=change)
    assert refused.status_code == 422
    assert refused.json()["type"].endswith(":topic-not-unsubscribable")
    unsubscribe = await client.post(
        f"/v1/subjects/{SUBJECT}/unsubscribe", json={"topic": "receipts"}
    )
    assert unsubscribe.status_code == 422
    # all or none: the marketing half of the refused change was not applied either
    view = (await client.get(f"/v1/subjects/{SUBJECT}/preferences")).json()
    assert _state(view, "product-news") == {"email": False, "sms": False}
    assert await outbox_events(db) == []


async def test_unknown_topic_and_channel_are_refused(
    client: httpx.AsyncClient, topics: list[str]
) -> None:
    for change, slug in (
        ({"topic": "nope", "subscribed": True}, "unknown-topic"),
        ({"topic": "receipts", "channel": "sms", "subscribed": True}, "channel-not-offered"),
    ):
        response = await client.patch(
            f"/v1/subjects/{SUBJECT}/preferences", json={"changes": [change]}
        )
        assert response.status_code == 422, response.text
        assert response.json()["type"].endswith(f":{slug}")
    server_owned = await client.patch(
        f"/v1/subjects/{SUBJECT}/preferences",
        json={"changes": [{"topic": "receipts", "subscribed": True}], "version": 7},
    )
    assert server_owned.status_code == 422


async def test_unsubscribe_all_leaves_every_marketing_topic_once(
    client: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_consent(db, REF, given=True)
    joined = await client.patch(
        f"/v1/subjects/{SUBJECT}/preferences",
        json={
            "changes": [
                {"topic": "product-news", "subscribed": True},
                {"topic": "partner-offers", "channel": "email", "subscribed": True},
            ]
        },
    )
    assert joined.status_code == 200, joined.text
    left = await client.post(f"/v1/subjects/{SUBJECT}/unsubscribe", json={})
    assert left.status_code == 200, left.text
    view = left.json()
    assert view["all_marketing_unsubscribed"] is True
    assert view["version"] == 2
    assert _state(view, "product-news") == {"email": False, "sms": False}
    assert _state(view, "partner-offers") == {"email": False, "sms": False}
    assert _state(view, "receipts") == {"email": True}
    again = await client.post(f"/v1/subjects/{SUBJECT}/unsubscribe", json={})
    assert again.json()["version"] == 2  # a replay changes nothing
    (unsubscribed,) = await outbox_events(db, catalogue.PREFERENCES_UNSUBSCRIBED)
    message = unsubscribed.message
    assert isinstance(message, preferences_pb2.PreferencesUnsubscribed)
    assert message.all_marketing
    assert message.topic == ""
    assert message.subject_version == 2
    assert sorted(message.channels) == ["email", "sms"]
    updates = await outbox_events(db, catalogue.PREFERENCES_UPDATED)
    assert [
        u.message.subject_version
        for u in updates
        if isinstance(u.message, preferences_pb2.PreferencesUpdated)
    ] == [1, 2]


async def test_leaving_one_topic_publishes_its_unsubscribe(
    client: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_consent(db, REF, given=True)
    await client.patch(
        f"/v1/subjects/{SUBJECT}/preferences",
        json={"changes": [{"topic": "product-news", "subscribed": True}]},
    )
    left = await client.post(
        f"/v1/subjects/{SUBJECT}/unsubscribe", json={"topic": "product-news", "channel": "sms"}
    )
    assert _state(left.json(), "product-news") == {"email": True, "sms": False}
    assert left.json()["all_marketing_unsubscribed"] is False
    (event,) = await outbox_events(db, catalogue.PREFERENCES_UNSUBSCRIBED)
    assert isinstance(event.message, preferences_pb2.PreferencesUnsubscribed)
    assert (event.message.topic, list(event.message.channels)) == ("product-news", ["sms"])


async def test_contact_is_stored_only_encrypted(
    client: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    email = "ada.lovelace@example.com"
    stored = await client.put(f"/v1/subjects/{SUBJECT}/contact", json={"email": email})
    assert stored.status_code == 204, stored.text
    assert (await client.get(f"/v1/subjects/{SUBJECT}/preferences")).json()["has_contact"]
    row = await db.fetchrow("SELECT * FROM subjects WHERE subject_ref = $1", REF)
    assert row is not None
    assert email.encode() not in bytes(row["contact_email_sealed"])
    dump = "".join(str(dict(r)) for r in await db.fetch("SELECT * FROM subjects"))
    assert "lovelace" not in dump.lower()
    bad = await client.put(f"/v1/subjects/{SUBJECT}/contact", json={"email": "not-an-address"})
    assert bad.status_code == 422
    removed = await client.delete(f"/v1/subjects/{SUBJECT}/contact")
    assert removed.status_code == 204
    assert not (await client.get(f"/v1/subjects/{SUBJECT}/preferences")).json()["has_contact"]


async def test_keys_without_the_scope_and_unknown_tenants_are_refused(
    client: httpx.AsyncClient, topics: list[str]
) -> None:
    anonymous = await client.get(
        f"/v1/subjects/{SUBJECT}/preferences", headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401
    wrong = await client.get(
        f"/v1/subjects/{SUBJECT}/preferences", headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401


async def test_a_tenant_the_directory_has_not_brought_yet_gets_503(
    api_settings: ApiSettings,
) -> None:
    unknown = api_settings.model_copy(update={"dev_tenant_id": uuid.uuid4()})
    app = create_app(unknown)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://preferences.test",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as client,
    ):
        for response in (
            await client.put("/v1/topics/product-news", json=MARKETING_TOPIC),
            await client.get(f"/v1/subjects/{SUBJECT}/preferences"),
        ):
            assert response.status_code == 503, response.text
            assert response.json()["type"].endswith(":tenant-not-provisioned")
            assert response.headers["retry-after"] == "1"
