"""The preference center `/p/{token}`: rendering (en, sv), form posts (post/redirect/get),
consent changes through the outbox, against real PostgreSQL.

Forms are submitted the way a browser would: every field of the rendered form, checkboxes
only when ticked and enabled, and the pressed button's name and value.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import asyncpg
import httpx
import pytest_asyncio
from fastapi import FastAPI

from consentry.consent.v1 import consent_pb2
from consentry.eventing import catalogue
from consentry.eventing import topics as kafka_topics
from consentry.eventing.sealing import Sealer
from consentry.eventing.testing import outbox_events
from consentry.preferences.links import tokens
from consentry.preferences.tenants import load_keys
from consentry.preferences.v1 import preferences_pb2

from .conftest import TENANT_ID, ref_of, set_consent

SUBJECT = "member@example.com"
REF = ref_of(SUBJECT)


@dataclass
class Form:
    """One <form> of a page: its action and its controls' attributes, in order."""

    action: str
    controls: list[dict[str, str | None]] = field(default_factory=list)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.labels: set[str] = set()
        self.inputs: list[dict[str, str | None]] = []
        self.html_lang: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "html":
            self.html_lang = values.get("lang")
        elif tag == "form":
            self.forms.append(Form(action=values.get("action") or ""))
            self._in_form = True
        elif tag == "label" and values.get("for"):
            self.labels.add(str(values["for"]))
        elif tag in ("input", "button"):
            control = {"tag": tag, **values}
            self.inputs.append(control)
            if self._in_form:
                self.forms[-1].controls.append(control)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def fields(
    form: Form,
    *,
    tick: set[str] = frozenset(),  # type: ignore[assignment]
    untick: set[str] = frozenset(),  # type: ignore[assignment]
    press: str = "save",
) -> list[tuple[str, str]]:
    """What a browser submits after (un)ticking the boxes with these values and pressing
    the button with value `press`."""
    submitted = []
    for control in form.controls:
        name, value = control.get("name"), control.get("value") or ""
        if name is None or "disabled" in control:
            continue
        if control["tag"] == "button":
            if value == press:
                submitted.append((name, value))
            continue
        if control.get("type") == "checkbox":
            ticked = ("checked" in control or value in tick) and value not in untick
            if not ticked:
                continue
        submitted.append((name, value))
    return submitted


def as_data(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Form fields for httpx (repeated names in order)."""
    data: dict[str, list[str]] = {}
    for name, value in pairs:
        data.setdefault(name, []).append(value)
    return data


def checkbox(page: _Page, value: str) -> dict[str, str | None]:
    (found,) = [c for c in page.inputs if c.get("type") == "checkbox" and c.get("value") == value]
    return found


@pytest_asyncio.fixture
async def visitor(preferences_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no API key (a person's browser)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=preferences_app), base_url="http://preferences.test"
    ) as visitor:
        yield visitor


async def center_path(client: httpx.AsyncClient, locale: str | None = "en") -> str:
    body = {} if locale is None else {"locale": locale}
    response = await client.post(f"/v1/subjects/{SUBJECT}/preference-links", json=body)
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    return urlsplit(url).path


async def submit(
    visitor: httpx.AsyncClient, url: str, html: str, form_index: int = 0, **choices: object
) -> httpx.Response:
    form = parse(html).forms[form_index]
    data = as_data(fields(form, **choices))  # type: ignore[arg-type]
    return await visitor.post(urljoin(url, form.action), data=data)


async def subscribed(db: asyncpg.Connection, topic: str, channel: str) -> bool | None:
    value: bool | None = await db.fetchval(
        "SELECT subscribed FROM preferences WHERE subject_ref = $1 AND topic = $2 AND channel = $3",
        REF,
        topic,
        channel,
    )
    return value


async def set_policy(db: asyncpg.Connection, version: str = "2026-01") -> None:
    await db.execute(
        "INSERT INTO tenant_policy (tenant_id, version, effective_at) VALUES ($1, $2, now())",
        TENANT_ID,
        version,
    )


async def test_the_page_renders_in_english_and_swedish(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient, topics: list[str]
) -> None:
    path = await center_path(client, locale="en")
    english = await visitor.get(path)
    assert english.status_code == 200, english.text
    page = parse(english.text)
    assert page.html_lang == "en"
    assert "Your communication preferences" in english.text
    assert "<legend>Product news</legend>" in english.text
    assert english.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in english.headers["content-security-policy"]
    receipts = checkbox(page, "receipts:email")
    assert "checked" in receipts
    assert "disabled" in receipts  # transactional: always on, shown as such
    assert "checked" not in checkbox(page, "product-news:email")  # marketing is opt-in
    # Every visible control has a label.
    for control in page.inputs:
        if control.get("type") == "checkbox":
            assert control.get("id") in page.labels, control
    assert "<script" not in english.text

    swedish = await visitor.get(f"{path}?lang=sv")
    assert parse(swedish.text).html_lang == "sv"
    assert swedish.headers["content-language"] == "sv"
    for text in ("Dina utskicksinställningar", "<legend>Produktnyheter</legend>", "E-post"):
        assert text in swedish.text
    by_browser = await visitor.get(
        await center_path(client, locale=None), headers={"Accept-Language": "sv-SE, en;q=0.5"}
    )
    assert parse(by_browser.text).html_lang == "sv"


async def test_a_form_post_changes_a_preference_and_redirects_to_the_saved_page(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_consent(db, REF, given=True)
    path = await center_path(client)
    url = f"http://preferences.test{path}?lang=sv"
    page = await visitor.get(url)
    response = await submit(visitor, url, page.text, tick={"product-news:email"})
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.endswith("?saved=1&lang=sv")
    assert await subscribed(db, "product-news", "email") is True
    assert await subscribed(db, "product-news", "sms") is None  # untouched
    (event,) = await outbox_events(db, catalogue.PREFERENCES_UPDATED)
    assert isinstance(event.message, preferences_pb2.PreferencesUpdated)
    assert event.message.method == preferences_pb2.PREFERENCE_METHOD_PREFERENCE_CENTER
    assert [(c.topic, c.channel, c.subscribed) for c in event.message.changes] == [
        ("product-news", "email", True)
    ]
    saved = await visitor.get(urljoin(url, location))
    assert saved.status_code == 200
    assert "Dina val är sparade." in saved.text
    assert "checked" in checkbox(parse(saved.text), "product-news:email")
    # Saving the unchanged page again records nothing.
    again = await submit(visitor, url, saved.text)
    assert again.status_code == 303
    assert len(await outbox_events(db)) == 1


async def test_untouched_boxes_do_not_undo_a_change_made_elsewhere(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_consent(db, REF, given=True)
    await client.patch(
        f"/v1/subjects/{SUBJECT}/preferences",
        json={"changes": [{"topic": "product-news", "subscribed": True}]},
    )
    url = f"http://preferences.test{await center_path(client)}"
    stale = (await visitor.get(url)).text  # shows product-news ticked
    left = await client.post(f"/v1/subjects/{SUBJECT}/unsubscribe", json={"topic": "product-news"})
    assert left.status_code == 200
    response = await submit(visitor, url, stale, tick={"partner-offers:sms"})
    assert response.status_code == 303
    assert await subscribed(db, "product-news", "email") is False  # stays unsubscribed
    assert await subscribed(db, "partner-offers", "sms") is True


async def test_a_consent_change_requests_a_capture_through_the_outbox(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_policy(db)
    await set_consent(db, REF, given=True)
    await set_consent(db, REF, given=True, purpose="performance")
    await set_consent(db, REF, given=True, purpose="required")
    url = f"http://preferences.test{await center_path(client)}"
    page = await visitor.get(url)
    parsed = parse(page.text)
    assert "checked" in checkbox(parsed, "performance")
    assert "disabled" in checkbox(parsed, "required")  # cannot be withdrawn
    assert "Marketing e-mail" in page.text
    response = await submit(visitor, url, page.text, untick={"marketing-email"})
    assert response.status_code == 303, response.text
    assert response.headers["location"].endswith("?saved=1&consent=1")
    (event,) = await outbox_events(db, catalogue.CONSENT_CAPTURE_REQUESTED)
    assert event.subject_ref == REF
    assert event.tenant_id == str(TENANT_ID)
    message = event.message
    assert isinstance(message, consent_pb2.ConsentCaptureRequested)
    assert message.policy_version == "2026-01"
    assert [(d.purpose, d.status) for d in message.decisions] == [
        ("marketing-email", consent_pb2.CONSENT_STATUS_WITHDRAWN)
    ]
    assert message.method == consent_pb2.CONSENT_METHOD_PREFERENCE_PAGE
    assert message.source == "preference-center"
    assert catalogue.CONSENT_CAPTURE_REQUESTED.check(message, event.tenant_id, REF) == ""
    topic = await db.fetchval(
        "SELECT topic FROM eventing_outbox WHERE event_type = $1",
        catalogue.CONSENT_CAPTURE_REQUESTED.name,
    )
    assert topic == kafka_topics.CONSENT_INTAKE
    saved = await visitor.get(urljoin(url, response.headers["location"]))
    assert "may take a moment" in saved.text


async def test_consents_are_read_only_while_the_policy_is_unknown(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_consent(db, REF, given=True)
    url = f"http://preferences.test{await center_path(client)}"
    page = await visitor.get(url)
    assert "disabled" in checkbox(parse(page.text), "marketing-email")
    assert "cannot be changed on this page right now" in page.text
    forged = await visitor.post(
        url, data={"consent_shown": "marketing-email:1", "action": "save"}
    )  # an altered form that withdraws anyway
    assert forged.status_code == 303
    assert await outbox_events(db, catalogue.CONSENT_CAPTURE_REQUESTED) == []


async def test_joining_marketing_without_consent_explains_and_keeps_the_other_changes(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_consent(db, REF, given=True)
    await client.patch(
        f"/v1/subjects/{SUBJECT}/preferences",
        json={"changes": [{"topic": "partner-offers", "channel": "email", "subscribed": True}]},
    )
    await set_consent(db, REF, given=False, version=2)  # withdrawn meanwhile
    url = f"http://preferences.test{await center_path(client)}"
    page = await visitor.get(url)
    response = await submit(
        visitor, url, page.text, tick={"product-news:email"}, untick={"partner-offers:email"}
    )
    assert response.status_code == 409
    assert 'role="alert"' in response.text
    assert "first give your consent to marketing e-mail" in response.text
    assert "Your other changes were saved." in response.text
    assert "checked" in checkbox(parse(response.text), "product-news:email")  # kept as chosen
    assert await subscribed(db, "product-news", "email") is None
    assert await subscribed(db, "partner-offers", "email") is False


async def test_giving_consent_and_joining_together_waits_for_the_consent(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_policy(db)
    url = f"http://preferences.test{await center_path(client)}"
    page = await visitor.get(url)
    assert "Marketing messages need your consent" in page.text
    pending = await submit(visitor, url, page.text, tick={"marketing-email", "product-news:email"})
    assert pending.status_code == 200, pending.text
    assert "We are recording your consent" in pending.text
    assert await subscribed(db, "product-news", "email") is None
    (capture,) = await outbox_events(db, catalogue.CONSENT_CAPTURE_REQUESTED)
    assert isinstance(capture.message, consent_pb2.ConsentCaptureRequested)
    assert [(d.purpose, d.status) for d in capture.message.decisions] == [
        ("marketing-email", consent_pb2.CONSENT_STATUS_GIVEN)
    ]
    # The consent service records it and this service's copy learns it; saving again joins,
    # and does not send the consent a second time.
    await set_consent(db, REF, given=True)
    again = await submit(visitor, url, pending.text)
    assert again.status_code == 303, again.text
    assert await subscribed(db, "product-news", "email") is True
    assert len(await outbox_events(db, catalogue.CONSENT_CAPTURE_REQUESTED)) == 1


async def test_the_unsubscribe_from_all_marketing_button(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_consent(db, REF, given=True)
    await client.patch(
        f"/v1/subjects/{SUBJECT}/preferences",
        json={"changes": [{"topic": "product-news", "subscribed": True}]},
    )
    url = f"http://preferences.test{await center_path(client)}"
    page = await visitor.get(url)
    response = await submit(visitor, url, page.text, form_index=1, press="unsubscribe-all")
    assert response.status_code == 303
    assert await subscribed(db, "product-news", "email") is False
    (event,) = await outbox_events(db, catalogue.PREFERENCES_UNSUBSCRIBED)
    assert isinstance(event.message, preferences_pb2.PreferencesUnsubscribed)
    assert event.message.all_marketing
    assert event.message.method == preferences_pb2.PREFERENCE_METHOD_PREFERENCE_CENTER
    saved = await visitor.get(urljoin(url, response.headers["location"]))
    assert "You have unsubscribed from all marketing" in saved.text


async def test_stale_or_altered_forms_change_nothing(
    client: httpx.AsyncClient, visitor: httpx.AsyncClient, topics: list[str], db: asyncpg.Connection
) -> None:
    await set_consent(db, REF, given=True)
    await set_policy(db)
    url = f"http://preferences.test{await center_path(client)}"
    stale = [
        # A topic that does not exist (any more), with a consent change in the same form.
        [
            ("shown", "no-such-topic:email:0"),
            ("subscribe", "no-such-topic:email"),
            ("consent_shown", "marketing-email:1"),
        ],
        [("shown", "receipts:email:1")],  # leaving a transactional topic
        [("shown", "product-news:push:0"), ("subscribe", "product-news:push")],  # no such channel
    ]
    for data in stale:
        response = await visitor.post(url, data=as_data(data))
        assert response.status_code == 409, data
        assert "The page was out of date" in response.text
    for data in (
        [("shown", "product-news:email")],
        [("shown", "product-news:fax:1")],
        [("consent_shown", "Not A Purpose:1")],
    ):
        response = await visitor.post(url, data=as_data(data))
        assert response.status_code == 400, data
    assert await outbox_events(db) == []
    assert await db.fetchval("SELECT count(*) FROM preferences") == 0


async def test_the_page_refuses_other_links(
    client: httpx.AsyncClient,
    visitor: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
    sealer: Sealer,
) -> None:
    unsubscribe = await client.post(f"/v1/subjects/{SUBJECT}/unsubscribe-links")
    token = unsubscribe.json()["url"].rsplit("/", 1)[1]
    wrong_purpose = await visitor.get(f"/p/{token}")
    assert wrong_purpose.status_code == 404
    keys = await load_keys(db, sealer, TENANT_ID)
    assert keys is not None
    expired = tokens.issue(
        keys.link_key,
        tokens.LinkClaims(
            purpose=tokens.Purpose.PREFERENCES,
            tenant_id=TENANT_ID,
            subject_ref=REF,
            expires_at=datetime.now(UTC) - timedelta(minutes=1),
        ),
    )
    assert (await visitor.get(f"/p/{expired}")).status_code == 410
    response = await visitor.post(f"/p/{expired}", data={"action": "unsubscribe-all"})
    assert response.status_code == 410
    unknown = tokens.issue(
        b"z" * 32,
        tokens.LinkClaims(
            purpose=tokens.Purpose.PREFERENCES,
            tenant_id=uuid.uuid4(),
            subject_ref=REF,
            expires_at=datetime.now(UTC) + timedelta(days=1),
        ),
    )
    assert (
        await visitor.post(f"/p/{unknown}", data={"action": "unsubscribe-all"})
    ).status_code == 404
    assert await outbox_events(db) == []
