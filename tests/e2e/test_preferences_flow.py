"""End to end through real processes and the real broker: the preferences service learns
tenants and API keys from the consent service's directory and consent state from the consent
topic; one-click unsubscribes and consent withdrawals suppress list members; an erasure
request shreds the person's e-mail address in every service."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from consentry.devstack.services import DEV_API_KEY, SERVICES
from consentry.devstack.stack import DevStack
from consentry.devstack.testing_workers import Worker

from .conftest import wait_until_completed

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TOPIC = {
    "category": "marketing",
    "channels": ["email"],
    "labels": {"en": "Product news", "sv": "Produktnyheter"},
}


@pytest_asyncio.fixture(loop_scope="session")
async def preferences_api(stack: DevStack, relay: Worker) -> AsyncIterator[httpx.AsyncClient]:
    """The preferences API, once the directory has brought the dev tenant (needs the consent
    relay), with the marketing topic `product-news`."""
    async with httpx.AsyncClient(
        base_url=stack.api_url("preferences"),
        headers={"Authorization": f"Bearer {DEV_API_KEY}"},
        timeout=30,
    ) as client:
        async with asyncio.timeout(60):
            while (
                response := await client.put("/v1/topics/product-news", json=TOPIC)
            ).status_code == 503:
                await asyncio.sleep(0.2)  # the tenant is not announced here yet
        assert response.status_code in (200, 201), response.text
        yield client


async def _consent(api: httpx.AsyncClient, subject: str, status: str) -> None:
    response = await api.put(
        f"/v1/subjects/{subject}/consents/marketing-email",
        json={"status": status, "policy_version": "2026-11"},
    )
    assert response.status_code == 200, response.text


async def _subscribe(api: httpx.AsyncClient, subject: str) -> str:
    """Subscribe once the marketing consent has reached this service; the subject's ref."""
    change = {"changes": [{"topic": "product-news", "channel": "email", "subscribed": True}]}
    async with asyncio.timeout(90):
        while (
            response := await api.patch(f"/v1/subjects/{subject}/preferences", json=change)
        ).status_code == 409:
            await asyncio.sleep(0.1)  # the consent follower has not seen the consent yet
    assert response.status_code == 200, response.text
    return str(response.json()["subject_ref"])


async def _verdict(api: httpx.AsyncClient, ref: str) -> str:
    response = await api.post(
        "/v1/lists/product-news/filter", json={"channel": "email", "subject_refs": [ref]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return "sendable" if ref in body["sendable"] else str(body["suppressed"][0]["reason"])


async def _wait_verdict(
    api: httpx.AsyncClient, ref: str, wanted: str, seconds: float = 90
) -> float:
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while (verdict := await _verdict(api, ref)) != wanted:
            await asyncio.sleep(0.05)
    assert verdict == wanted
    return time.monotonic() - started


async def test_one_click_unsubscribe_suppresses_the_member(
    consent_api: httpx.AsyncClient, preferences_api: httpx.AsyncClient
) -> None:
    subject = f"unsub-{secrets.token_hex(4)}@example.com"
    await _consent(consent_api, subject, "given")
    ref = await _subscribe(preferences_api, subject)
    await _wait_verdict(preferences_api, ref, "sendable")
    links = await preferences_api.post(
        f"/v1/subjects/{subject}/unsubscribe-links", json={"topic": "product-news"}
    )
    assert links.status_code == 200, links.text
    body = links.json()
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<(.+)>", body["headers"]["List-Unsubscribe"])
    assert url is not None
    async with httpx.AsyncClient(timeout=30) as anonymous:  # a mailbox provider: no key
        clicked = await anonymous.post(
            url[1],
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert clicked.status_code == 200, clicked.text
    took = await _wait_verdict(preferences_api, ref, "unsubscribed")
    assert took < 30


async def test_withdrawing_marketing_consent_in_the_consent_service_suppresses(
    consent_api: httpx.AsyncClient, preferences_api: httpx.AsyncClient
) -> None:
    subject = f"withdraw-{secrets.token_hex(4)}@example.com"
    await _consent(consent_api, subject, "given")
    ref = await _subscribe(preferences_api, subject)
    await _wait_verdict(preferences_api, ref, "sendable")
    await _consent(consent_api, subject, "withdrawn")
    await _wait_verdict(preferences_api, ref, "consent-withdrawn")


async def _everything_on(bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic`, read from the earliest offset until 2 s bring nothing new
    (the development broker's end offsets cannot be trusted, ADR 0002)."""
    consumer = AIOKafkaConsumer(  # no group: every partition, no join to wait for
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 2:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return records


def _logs_holding(log_dir: Path, needle: str) -> list[str]:
    """The process logs that contain `needle` (there must be logs to search)."""
    logs = sorted(log_dir.glob("*.log"))
    assert logs, "the stack's processes log to log_dir"
    return [log.name for log in logs if needle in log.read_text(errors="replace").lower()]


async def _tables_holding(dsn: str, needle: str) -> list[str]:
    """Every table of a database with a row whose text form contains `needle`."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        found = []
        for table in tables:
            hits = await conn.fetchval(
                f"SELECT count(*) FROM {table['name']} AS t"
                " WHERE position($1 in lower(t::text)) > 0"
                " OR position($2 in t::text) > 0",
                needle.lower(),
                needle.encode().hex(),
            )
            if hits:
                found.append(f"{dsn.rsplit('/', 1)[-1]}.{table['name']}")
        return found
    finally:
        await conn.close()


@pytest.mark.timeout(300)  # the stack's start, the erasure, then every table and topic read
async def test_an_erased_address_cannot_be_recovered_from_any_table_topic_or_log(
    stack: DevStack,
    log_dir: Path,
    consent_api: httpx.AsyncClient,
    preferences_api: httpx.AsyncClient,
    audit_api: httpx.AsyncClient,
) -> None:
    email = f"planted-{secrets.token_hex(6)}@example.com"
    await _consent(consent_api, email, "given")
    ref = await _subscribe(preferences_api, email)
    stored = await preferences_api.put(f"/v1/subjects/{email}/contact", json={"email": email})
    assert stored.status_code == 204
    await _wait_verdict(preferences_api, ref, "sendable")

    filed = await consent_api.post(
        "/v1/rights-requests",
        json={"kind": "erasure", "requester": "tenant", "subject_ids": [email]},
    )
    assert filed.status_code == 202, filed.text
    request_id = filed.json()["id"]
    state = await wait_until_completed(consent_api, request_id)
    assert state["certificate"]
    await _wait_verdict(preferences_api, ref, "erased")

    # No table of any service's database holds the address, in clear or as hex.
    holding = []
    for service in SERVICES:
        holding += await _tables_holding(stack.database_dsn(service.name), email)
    assert holding == []
    # No record on any topic carries it, in its value, key or headers.
    every_topic = sorted({t for service in SERVICES for t in service.topics})
    scans = await asyncio.gather(*(_everything_on(stack.bootstrap, t) for t in every_topic))
    assert sum(map(len, scans)) > 0, "the scan read nothing: it would prove nothing"
    for topic, records in zip(every_topic, scans, strict=True):
        for record in records:
            raw = b"".join(
                [record.value or b"", record.key or b""]
                + [bytes(value or b"") for _, value in record.headers or ()]
            )
            assert email.encode() not in raw.lower(), f"{topic} holds the address"
    # No process wrote it to its log.
    assert await asyncio.to_thread(_logs_holding, log_dir, email) == []
    # The audit chain kept the subject's history (by reference) with the erasure itself, and
    # still verifies: erasure shreds keys, it never edits the log.
    wanted = {
        "consentry.consent.given.v1",
        "consentry.rights.erasure_requested.v1",
        "consentry.rights.erasure_completed.v1",
    }
    async with asyncio.timeout(90):
        while not wanted <= (kinds := await _audited_kinds(audit_api, ref)):
            await asyncio.sleep(0.2)
    assert wanted <= kinds
    report = (await audit_api.get("/v1/audit/verify")).json()
    assert report["ok"] is True, report
    assert report["broken"] is None


async def _audited_kinds(api: httpx.AsyncClient, ref: str) -> set[str]:
    """The event types of the audit entries about the subject `ref`."""
    kinds: set[str] = set()
    after = 0
    while True:
        response = await api.get(
            "/v1/audit/entries", params={"after_seq": after, "limit": 1000, "subject_ref": ref}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        kinds.update(str(entry["event_type"]) for entry in page["entries"])
        if page["next_after_seq"] is None:
            return kinds
        after = page["next_after_seq"]
