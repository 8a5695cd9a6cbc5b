"""The pages in a real headless Chromium (Debian's, driven by Playwright), with JavaScript
turned off: a person changes a preference with the keyboard only, and unsubscribes in one
click. The app runs under uvicorn on a loopback port, against real PostgreSQL.

Chromium must be installed (`scripts/ensure-chromium.sh`); without it this test fails, it
does not skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from consentry.eventing import catalogue
from consentry.eventing.testing import outbox_events
from consentry.preferences.app import create_app
from consentry.preferences.settings import ApiSettings
from consentry.preferences.v1 import preferences_pb2

from .conftest import TENANT_ID, ref_of, set_consent

CHROMIUM = os.environ.get("CONSENTRY_CHROMIUM", "/usr/bin/chromium")
SUBJECT = "keyboard.user@example.com"
REF = ref_of(SUBJECT)
MAX_TABS = 60


@pytest_asyncio.fixture
async def base_url(api_settings: ApiSettings, tenant: object) -> AsyncIterator[str]:
    """The preferences app served by uvicorn on a free loopback port (this event loop)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(api_settings),
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="none",
        http="h11",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()  # raises the start-up error
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run scripts/ensure-chromium.sh "
            "(apt-get install chromium) or set CONSENTRY_CHROMIUM",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A tab with JavaScript disabled: the pages must not need it."""
    context = await browser.new_context(java_script_enabled=False, locale="en-GB")
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def _tab_to(page: Page, target: Locator) -> None:
    """Press Tab until `target` has the keyboard focus (as a keyboard user would)."""
    for _ in range(MAX_TABS):
        await page.keyboard.press("Tab")
        if await target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError(f"{target} cannot be reached with the Tab key")


async def _link(client: httpx.AsyncClient, kind: str, **body: str) -> str:
    response = await client.post(f"/v1/subjects/{SUBJECT}/{kind}", json=body)
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    return urlsplit(url).path


async def _assert_every_control_is_labelled(page: Page) -> None:
    controls = page.locator("input:not([type=hidden]), button")
    count = await controls.count()
    assert count > 0
    for index in range(count):
        control = controls.nth(index)
        name = await control.evaluate(
            "el => el.labels && el.labels.length ? el.labels[0].textContent : el.textContent"
        )
        assert name, await control.evaluate("el => el.outerHTML")
        assert name.strip(), await control.evaluate("el => el.outerHTML")


async def test_a_keyboard_user_changes_a_preference_without_javascript(
    client: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
    base_url: str,
    page: Page,
) -> None:
    await set_consent(db, REF, given=True)
    await page.goto(base_url + await _link(client, "preference-links"))
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "Your communication preferences"
    )
    await _assert_every_control_is_labelled(page)
    # The inline style is allowed by its CSP hash (layout applied), and nothing runs.
    assert await page.locator("body").evaluate("b => getComputedStyle(b).maxWidth") == "672px"

    news = page.get_by_role("group", name="Product news")
    checkbox = news.get_by_label("E-mail")
    await expect(checkbox).not_to_be_checked()
    receipts = page.get_by_role("group", name="Receipts").get_by_label("E-mail")
    await expect(receipts).to_be_checked()
    await expect(receipts).to_be_disabled()

    await _tab_to(page, checkbox)
    outline = await checkbox.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline == "solid"  # the keyboard focus is visible
    await page.keyboard.press("Space")
    await expect(checkbox).to_be_checked()
    save = page.get_by_role("button", name="Save my choices")
    await _tab_to(page, save)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**?saved=1")
    await expect(page.get_by_role("status")).to_contain_text("Your choices are saved.")
    await expect(
        page.get_by_role("group", name="Product news").get_by_label("E-mail")
    ).to_be_checked()

    subscribed = await db.fetchval(
        "SELECT subscribed FROM preferences WHERE tenant_id = $1 AND subject_ref = $2"
        " AND topic = 'product-news' AND channel = 'email'",
        TENANT_ID,
        REF,
    )
    assert subscribed is True
    (event,) = await outbox_events(db, catalogue.PREFERENCES_UPDATED)
    assert isinstance(event.message, preferences_pb2.PreferencesUpdated)
    assert event.message.method == preferences_pb2.PREFERENCE_METHOD_PREFERENCE_CENTER
    assert [(c.topic, c.channel, c.subscribed) for c in event.message.changes] == [
        ("product-news", "email", True)
    ]

    # The same page in Swedish, by the language link.
    await page.get_by_role("link", name="Svenska").click()
    await expect(page.locator("html")).to_have_attribute("lang", "sv")
    await expect(
        page.get_by_role("group", name="Produktnyheter").get_by_label("E-post")
    ).to_be_checked()


async def test_one_click_unsubscribe_in_the_browser(
    client: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
    base_url: str,
    page: Page,
) -> None:
    await set_consent(db, REF, given=True)
    joined = await client.patch(
        f"/v1/subjects/{SUBJECT}/preferences",
        json={"changes": [{"topic": "product-news", "subscribed": True}]},
    )
    assert joined.status_code == 200, joined.text
    path = await _link(client, "unsubscribe-links", topic="product-news", locale="sv")
    await page.goto(base_url + path)
    await expect(page.locator("html")).to_have_attribute("lang", "sv")
    assert await outbox_events(db, catalogue.PREFERENCES_UNSUBSCRIBED) == []  # GET: nothing
    button = page.get_by_role("button", name="Avsluta prenumerationen")
    await _tab_to(page, button)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "Du har avslutat prenumerationen"
    )
    (event,) = await outbox_events(db, catalogue.PREFERENCES_UNSUBSCRIBED)
    assert isinstance(event.message, preferences_pb2.PreferencesUnsubscribed)
    assert event.message.method == preferences_pb2.PREFERENCE_METHOD_ONE_CLICK
    # On to the preference center, which shows the topic off.
    await page.get_by_role("link", name="Hantera dina inställningar").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Dina utskicksinställningar")
    for channel in ("E-post", "Sms"):
        await expect(
            page.get_by_role("group", name="Produktnyheter").get_by_label(channel)
        ).not_to_be_checked()
