"""The intake topic: captures from product code, applied like HTTP, rejects dead-lettered."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from consentry.consent.consents.intake import IntakeSettings, run_intake
from consentry.consent.tenants.service import pseudonymise
from consentry.consent.v1 import consent_pb2
from consentry.eventing import catalogue, topics
from consentry.eventing.envelope import Event, encode
from consentry.eventing.testing import collect, header

from .conftest import TENANT_ID

pytestmark = pytest.mark.integration
GIVEN = consent_pb2.CONSENT_STATUS_GIVEN
WITHDRAWN = consent_pb2.CONSENT_STATUS_WITHDRAWN


def capture_event(
    subject_ref: str,
    decisions: dict[str, consent_pb2.ConsentStatus.ValueType],
    *,
    age: int | None = None,
    event_id: str = "",
) -> Event:
    message = consent_pb2.ConsentCaptureRequested(
        tenant_id=str(TENANT_ID),
        subject_ref=subject_ref,
        policy_version="2026-01",
        decisions=[consent_pb2.PurposeDecision(purpose=p, status=s) for p, s in decisions.items()],
        method=consent_pb2.CONSENT_METHOD_BANNER,
        source="mobile-app",
    )
    if age is not None:
        message.age = age
    return Event(
        catalogue.CONSENT_CAPTURE_REQUESTED,
        str(TENANT_ID),
        subject_ref,
        message,
        "/product/test",
        id=event_id or str(uuid.uuid4()),
    )


async def test_intake_applies_good_captures_once_and_dead_letters_rejects(
    client: httpx.AsyncClient,
    published_policy: str,
    consent_db: str,
    db: asyncpg.Connection,
    kafka_bootstrap: str,
    subject_key: bytes,
) -> None:
    group = f"intake-{uuid.uuid4().hex[:8]}"
    refs = [pseudonymise(subject_key, f"app-user-{n}") for n in range(20)]
    good = [capture_event(ref, {"performance": GIVEN, "targeting": WITHDRAWN}) for ref in refs]
    duplicate = good[3]  # the same event id sent again: applied once
    refused = capture_event(refs[0], {"required": WITHDRAWN})
    child = capture_event(pseudonymise(subject_key, "kid"), {"performance": GIVEN}, age=9)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for event in [*good[:10], refused, duplicate, child, *good[10:]]:
            record = encode(event)
            await producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
        # Not protobuf at all, on the same topic.
        await producer.send_and_wait(
            topics.CONSENT_INTAKE,
            b"\xff\x00garbage",
            key=f"{TENANT_ID}/{refs[0]}".encode(),
            headers=[("ce_type", catalogue.CONSENT_CAPTURE_REQUESTED.name.encode())],
        )
    finally:
        await producer.stop()

    settings = IntakeSettings(
        database_url=consent_db,
        kafka_bootstrap_servers=kafka_bootstrap,
        environment="test",
        intake_group_id=group,
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_intake(settings, stop))
    try:
        dead = await collect(
            kafka_bootstrap,
            topics.dead_letter_topic(group),
            lambda kept: len(kept) >= 3,
            seconds=30,
        )
        async with asyncio.timeout(20):
            while await db.fetchval("SELECT count(*) FROM consent_ledger") < 40:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a duplicate would have been applied by now
    finally:
        stop.set()
        await worker
    assert await db.fetchval("SELECT count(*) FROM consent_ledger") == 40
    assert await db.fetchval("SELECT count(DISTINCT subject_ref) FROM consents") == 20
    assert len(dead) == 3
    reasons = [header(record, "dlq.reason") for record in dead]
    assert {"purpose-not-withdrawable", "child-consent-not-allowed"} < set(reasons)
    assert all(reasons)  # the garbage record has its decoding reason too
    # The same result as HTTP: the state is readable through the API.
    listed = (await client.get("/v1/subjects/app-user-7/consents")).json()
    assert {c["purpose"]: c["status"] for c in listed["consents"]} == {
        "performance": "given",
        "targeting": "withdrawn",
    }
    assert {c["method"] for c in listed["consents"]} == {"banner"}


async def test_subject_refs_are_what_the_api_uses(
    client: httpx.AsyncClient, published_policy: str
) -> None:
    response = await client.post("/v1/subject-refs", json={"subject_ids": ["a@x.se", "b"]})
    assert response.status_code == 200, response.text
    refs = response.json()["subject_refs"]
    await client.put(
        "/v1/subjects/a@x.se/consents/performance",
        json={"status": "given", "policy_version": "2026-01"},
    )
    listed = (await client.get("/v1/subjects/a@x.se/consents")).json()
    assert refs[0] == listed["subject_ref"]
    assert len(refs) == 2
    assert refs[0] != refs[1]
    empty = await client.post("/v1/subject-refs", json={"subject_ids": []})
    assert empty.status_code == 422
