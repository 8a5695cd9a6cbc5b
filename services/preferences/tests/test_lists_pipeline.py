"""End to end in the preferences service: the API writes (preference change, one-click
unsubscribe), the outbox relay publishes, the list processor (a real process) applies, and
the list API answers; the suppression reaches the lists topic for sending platforms."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio

from consentry.eventing import topics as topic_names
from consentry.eventing.envelope import decode
from consentry.eventing.relay import RelaySettings, run_relay
from consentry.eventing.testing import collect
from consentry.preferences.v1 import lists_pb2

from .conftest import TENANT_ID, ref_of, set_consent
from .test_lists_helpers import (
    Processor,
    consent,
    ensure_topics,
    eventually,
    processor_env,
    produce,
)

pytestmark = pytest.mark.integration
NEWS = "product-news"


@pytest_asyncio.fixture
async def pipeline(app_dsn: str, kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Processor]:
    """The outbox relay (in this process) and a list processor (its own process)."""
    name = f"lp-{secrets.token_hex(4)}"
    await ensure_topics(kafka_bootstrap, topic_names.dead_letter_topic(name))
    stop = asyncio.Event()
    settings = RelaySettings(
        database_url=app_dsn, kafka_bootstrap_servers=kafka_bootstrap, environment="test"
    )
    relay = asyncio.create_task(run_relay(settings, stop))
    proc = Processor(processor_env(app_dsn, kafka_bootstrap, name), tmp_path / "processor.log")
    proc.start()
    try:
        yield proc
    finally:
        stop.set()
        await relay
        assert proc.stop() == 0, proc.log.read_text()[-3000:]


async def test_api_to_list_and_one_click_to_suppression(
    client: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
    pipeline: Processor,
    kafka_bootstrap: str,
) -> None:
    subject = f"carol-{secrets.token_hex(4)}"
    ref = ref_of(subject)
    # The consent service said yes to marketing-email: this service's copy (which the API
    # checks) and the event (which the processor reads).
    await set_consent(db, ref, given=True)
    await produce(kafka_bootstrap, [consent(TENANT_ID, ref, 1, given=True)])
    response = await client.put(f"/v1/subjects/{subject}/contact", json={"email": "c@example.se"})
    assert response.status_code == 204
    response = await client.patch(
        f"/v1/subjects/{subject}/preferences",
        json={"changes": [{"topic": NEWS, "channel": "email", "subscribed": True}]},
    )
    assert response.status_code == 200, response.text

    async def members() -> dict[str, Any]:
        found: dict[str, Any] = {}
        after = None
        while True:
            page = (
                await client.get(
                    f"/v1/lists/{NEWS}/members", params={"after": after} if after else {}
                )
            ).json()
            found |= {m["subject_ref"]: m["contact"] for m in page["members"]}
            after = page["next"]
            if after is None:
                return found

    listed = await eventually(members, lambda found: ref in found)
    assert listed[ref] is not None  # the contact, sealed for the sending system

    # The mail's one-click link (RFC 8058): POST with the fixed body, no API key.
    links = (await client.post(f"/v1/subjects/{subject}/unsubscribe-links", json={})).json()
    path = urlsplit(links["url"]).path
    response = await client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": ""},
    )
    assert response.status_code == 200, response.text[:300]

    async def verdict() -> list[dict[str, str]]:
        answer = await client.post(f"/v1/lists/{NEWS}/filter", json={"subject_refs": [ref]})
        suppressed: list[dict[str, str]] = answer.json()["suppressed"]
        return suppressed

    unsubscribed = [{"subject_ref": ref, "reason": "unsubscribed"}]
    await eventually(verdict, lambda found: found == unsubscribed)
    assert ref not in await members()
    # And the sending platforms hear of it on the lists topic.
    key = f"{TENANT_ID}/{ref}".encode()
    records = await collect(
        kafka_bootstrap, topic_names.LISTS, lambda kept: len(kept) >= 1, keep=lambda r: r.key == key
    )
    event = decode(records[0].key, records[0].value, list(records[0].headers))
    assert isinstance(event.message, lists_pb2.ListMemberSuppressed)
    assert (event.message.topic, event.message.channel, event.message.reason) == (
        "",
        "",
        lists_pb2.SUPPRESSION_REASON_UNSUBSCRIBED,
    )
    assert uuid.UUID(event.tenant_id) == TENANT_ID
