"""Completion of erasure requests: the tracker's handler with real decoded events, and the
whole flow through the real broker (relay, `rights` worker, `rights-tracker` consumer); the
certificate verifies with the tenant's JWKS and an independent JOSE library (jwcrypto)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from jwcrypto.common import JWException  # type: ignore[import-untyped]

from consentry.consent.db import set_tenant
from consentry.consent.rights import repository, tracker
from consentry.consent.rights.fanout import rights_pass, run_rights_worker
from consentry.consent.rights.models import Requester, RequestKind, RightsRequestIn
from consentry.consent.rights.service import ErasurePolicy, create_request
from consentry.consent.rights.tracker import RightsTracker, run_rights_tracker
from consentry.consent.sealing import Sealer
from consentry.consent.settings import RightsTrackerSettings, RightsWorkerSettings
from consentry.devstack.broker import create_topics
from consentry.eventing import catalogue, topics
from consentry.eventing.db import Pool
from consentry.eventing.envelope import PoisonMessage, encode
from consentry.eventing.relay import OutboxRelay, RelayOptions
from consentry.eventing.testing import collect, header, outbox_events
from consentry.eventing.topics import TopicSpec
from consentry.rights.v1 import rights_pb2

from .conftest import TENANT_ID, MakeTenant
from .test_rights_support import (
    acknowledged,
    apply,
    dead_lettered,
    file,
    jwks_of,
    messages,
    request_row,
    selected,
    service_completed,
    verify_certificate,
)

pytestmark = pytest.mark.integration
BASE = "/v1/rights-requests"


@pytest_asyncio.fixture
async def pool(app_dsn: str) -> AsyncIterator[Pool]:
    """A pool logged in as the application's role (row-level security applies)."""
    created = await asyncpg.create_pool(app_dsn, min_size=1, max_size=4)
    assert created is not None
    yield created
    await created.close()


async def refs_of(db: asyncpg.Connection, request_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT subject_ref FROM rights_request_subjects WHERE request_id = $1 ORDER BY n",
        uuid.UUID(request_id),
    )
    return [row["subject_ref"] for row in rows]


async def test_answers_are_recorded_while_the_rights_worker_holds_the_request(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection, sealer: Sealer
) -> None:
    """The `rights` worker holds a request's row locked while it fans out a chunk (a bulk
    request: a chunk after another for minutes). The tracker's bookkeeping of the answers
    that already came must not wait for it: its counters are kept in a row of their own."""
    filed = await file(client, kind="erasure", requester="tenant", subject_ids=["ann", "ben"])
    rid = filed["id"]
    await rights_pass(pool, now=datetime.now(UTC))
    ann, ben = await refs_of(db, rid)
    tracker = RightsTracker(sealer)
    async with pool.acquire() as holder, holder.transaction():
        await set_tenant(holder, TENANT_ID)
        locked = await repository.lock_requests(
            holder, tenant_id=TENANT_ID, request_ids=[uuid.UUID(rid)]
        )
        assert [row["id"] for row in locked] == [uuid.UUID(rid)]
        async with asyncio.timeout(5):  # before: blocked until the holder's commit
            await apply(
                pool,
                tracker,
                [
                    service_completed(TENANT_ID, ann, rid),
                    selected(TENANT_ID, ann, rid, []),
                    selected(TENANT_ID, ben, rid, ["billing"]),
                ],
            )
    row = await request_row(db, rid)
    assert row["subjects_with_recipients"] == 2
    assert row["subjects_done"] == 0  # the other services have not answered yet
    assert row["state"] == "in-progress"


def scans_of(plan: dict[str, Any], table: str) -> list[str]:
    """How each node of an EXPLAIN (FORMAT JSON) plan reads `table` (its target aside)."""
    found = []
    if plan.get("Relation Name") == table and plan["Node Type"] != "ModifyTable":
        found.append(plan["Node Type"])
    for child in plan.get("Plans", []):
        found += scans_of(child, table)
    return found


async def test_a_batch_of_answers_looks_its_subjects_up_by_index(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection
) -> None:
    """The tracker's statements for 500 answers of a 20,000-subject request, planned with
    statistics that know the tables' sizes: every read of the subjects, and of their
    pending recipients, is an index lookup. Joined plainly to the batch (or as an
    anti-join), PostgreSQL read all of them for each batch instead."""
    filed = await file(
        client, kind="erasure", requester="tenant", subject_ids=[f"p{n}" for n in range(20000)]
    )
    request_id = uuid.UUID(filed["id"])
    every = await refs_of(db, filed["id"])
    refs, now = every[:500], datetime.now(UTC)
    requests = [request_id] * len(refs)
    async with pool.acquire() as conn:
        # As the worker's first chunk does, before any answer can come: without it, the
        # statistics say the subjects' table is empty and the fill below reads all of it
        # once per row (20,000 x 20,000 rows, half a minute).
        assert await repository.subjects_added(conn, 20000)
        async with conn.transaction():  # a recipient pending for each
            await set_tenant(conn, TENANT_ID)
            n = len(every)
            await conn.execute(
                tracker._SELECT_RECIPIENTS, TENANT_ID, [request_id] * n, every, ["r"] * n, [now] * n
            )
    await db.execute("ANALYZE rights_subject_recipients")
    statements = {
        "_RECORD_COMPLETIONS": (
            tracker._RECORD_COMPLETIONS,
            (requests, refs, ["x"] * 500, [now] * 500, ["[]"] * 500, [None] * 500),
        ),
        "_MARK_SELECTED": (tracker._MARK_SELECTED, (requests, refs, [now] * 500)),
        "_SELECT_RECIPIENTS": (
            tracker._SELECT_RECIPIENTS,
            (requests, refs, ["r"] * 500, [now] * 500),
        ),
        "_RESOLVE_RECIPIENTS": (
            tracker._RESOLVE_RECIPIENTS,
            (
                requests,
                refs,
                ["r"] * 500,
                ["acknowledged"] * 500,
                [now] * 500,
                [None] * 500,
                [now] * 500,
                [1] * 500,
                [None] * 500,
            ),
        ),
        "_MARK_DONE": (tracker._MARK_DONE, (requests, refs, now)),
    }
    async with pool.acquire() as conn, conn.transaction():
        await set_tenant(conn, TENANT_ID)
        plans = {
            name: json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, TENANT_ID, *args))[
                0
            ]["Plan"]
            for name, (sql, args) in statements.items()
        }
    for name, plan in plans.items():
        reads = scans_of(plan, "rights_request_subjects")
        assert reads, name
        assert set(reads) <= {"Index Scan", "Index Only Scan"}, (name, reads)
    reads = scans_of(plans["_MARK_DONE"], "rights_subject_recipients")
    assert reads
    assert set(reads) <= {"Index Scan", "Index Only Scan"}, reads


async def test_an_erasure_completes_when_every_service_and_recipient_answered(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection, sealer: Sealer
) -> None:
    filed = await file(client, kind="erasure", requester="tenant", subject_ids=["ann", "ben"])
    rid = filed["id"]
    await rights_pass(pool, now=datetime.now(UTC))
    ann, ben = await refs_of(db, rid)
    tracker = RightsTracker(sealer)

    # The consent service's own answers, exactly as they will be on the topic.
    own = await outbox_events(db, catalogue.ERASURE_COMPLETED)
    await apply(pool, tracker, own)
    # Events of other requests or of no request are ignored.
    await apply(
        pool,
        tracker,
        [
            service_completed(TENANT_ID, ann, str(uuid.uuid4())),
            selected(TENANT_ID, ann, "", ["billing"]),  # a consent withdrawal's notice
        ],
    )
    await apply(pool, tracker, [service_completed(TENANT_ID, r, rid) for r in (ann, ben)])
    row = await request_row(db, rid)
    assert row["state"] == "in-progress"
    assert row["subjects_done"] == 0

    await apply(
        pool,
        tracker,
        [selected(TENANT_ID, ann, rid, ["billing", "partner"]), selected(TENANT_ID, ben, rid, [])],
    )
    row = await request_row(db, rid)
    assert row["subjects_done"] == 1  # ben: no recipient to wait for
    assert row["subjects_with_recipients"] == 2

    await apply(pool, tracker, [acknowledged(TENANT_ID, ann, rid, "billing", attempts=4)])
    assert (await request_row(db, rid))["state"] == "in-progress"  # partner still pending
    await apply(pool, tracker, [dead_lettered(TENANT_ID, ann, rid, "partner")])

    row = await request_row(db, rid)
    assert row["state"] == "completed"
    assert row["subjects_done"] == 2
    assert tracker.completed == [uuid.UUID(rid)]
    (closed,) = await outbox_events(db, catalogue.REQUEST_CLOSED)
    (message,) = messages([closed], rights_pb2.RequestClosed)
    assert message.outcome == rights_pb2.REQUEST_OUTCOME_COMPLETED
    assert message.certificate == row["certificate"]
    assert closed.key == f"{TENANT_ID}/requests".encode()

    claims = verify_certificate(
        row["certificate"], await jwks_of(client, TENANT_ID), str(TENANT_ID)
    )
    assert claims["sub"] == f"urn:consentry:rights-request:{rid}"
    assert claims["request"]["kind"] == "erasure"
    assert claims["request"]["requester"] == "tenant"
    listed = "\n".join(sorted([ann, ben])).encode()
    assert claims["subjects"] == {"count": 2, "sha256": hashlib.sha256(listed).hexdigest()}
    services = {s["service"]: s for s in claims["services"]}
    assert services["consent"]["subjects"] == 2
    assert services["consent"]["erased"] == []  # the service held nothing about them
    assert services["preferences"]["subjects"] == 2
    assert services["preferences"]["erased"] == ["data-key", "preferences"]
    recipients = {r["recipient"]: r for r in claims["recipients"]}
    assert recipients["billing"]["confirmed"] == 1
    assert not recipients["billing"]["escalated"]
    assert recipients["billing"]["firstConfirmedAt"] is not None
    assert recipients["partner"]["deadLettered"] == 1
    assert recipients["partner"]["escalated"]
    assert recipients["partner"]["lastDeadLetteredAt"] is not None

    status = (await client.get(f"{BASE}/{rid}")).json()
    assert status["state"] == "completed"
    assert status["certificate"] == row["certificate"]
    assert status["deadline"]["status"] == "closed"
    assert {s["service"]: s["subjects"] for s in status["progress"]["services"]} == {
        "consent": 2,
        "preferences": 2,
    }
    assert {r["recipient_id"]: r["dead_lettered"] for r in status["progress"]["recipients"]} == {
        "billing": 0,
        "partner": 1,
    }


async def test_requests_completed_by_one_batch_each_get_their_own_certificate(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection, sealer: Sealer
) -> None:
    one = (await file(client, kind="erasure", requester="tenant", subject_ids=["cal"]))["id"]
    two = (await file(client, kind="erasure", requester="tenant", subject_ids=["dee", "eve"]))["id"]
    open_ = (await file(client, kind="erasure", requester="tenant", subject_ids=["fay"]))["id"]
    await rights_pass(pool, now=datetime.now(UTC))
    (cal,), (dee, eve), (fay,) = [await refs_of(db, rid) for rid in (one, two, open_)]
    tracker = RightsTracker(sealer)
    await apply(pool, tracker, await outbox_events(db, catalogue.ERASURE_COMPLETED))

    # One batch answers everything the first two requests wait for, and part of the third's.
    await apply(
        pool,
        tracker,
        [
            service_completed(TENANT_ID, cal, one),
            selected(TENANT_ID, cal, one, ["billing"]),
            acknowledged(TENANT_ID, cal, one, "billing"),
            *[service_completed(TENANT_ID, ref, two, erased=["preferences"]) for ref in (dee, eve)],
            selected(TENANT_ID, dee, two, []),
            selected(TENANT_ID, eve, two, ["partner"]),
            dead_lettered(TENANT_ID, eve, two, "partner"),
            service_completed(TENANT_ID, fay, open_),
        ],
    )

    assert sorted(tracker.completed) == sorted([uuid.UUID(one), uuid.UUID(two)])
    assert (await request_row(db, open_))["state"] == "in-progress"
    closed = messages(await outbox_events(db, catalogue.REQUEST_CLOSED), rights_pb2.RequestClosed)
    assert sorted(m.request_id for m in closed) == sorted([one, two])
    jwks = await jwks_of(client, TENANT_ID)
    for rid, refs, erased, recipient in (
        (one, [cal], ["data-key", "preferences"], ("billing", "confirmed")),
        (two, [dee, eve], ["preferences"], ("partner", "deadLettered")),
    ):
        row = await request_row(db, rid)
        assert row["state"] == "completed"
        assert row["closed_at"] is not None
        assert row["subjects_done"] == len(refs)
        (message,) = [m for m in closed if m.request_id == rid]
        assert message.certificate == row["certificate"]
        claims = verify_certificate(row["certificate"], jwks, str(TENANT_ID))
        assert claims["sub"] == f"urn:consentry:rights-request:{rid}"
        digest = hashlib.sha256("\n".join(sorted(refs)).encode()).hexdigest()
        expected = {"count": len(refs), "sha256": digest}
        if len(refs) == 1:
            expected["ref"] = refs[0]
        assert claims["subjects"] == expected
        services = {s["service"]: s for s in claims["services"]}
        assert services["preferences"]["erased"] == erased
        assert services["preferences"]["subjects"] == len(refs)
        assert [(r["recipient"], r[recipient[1]]) for r in claims["recipients"]] == [
            (recipient[0], 1)
        ]


async def test_answers_count_once_in_any_order(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection, sealer: Sealer
) -> None:
    filed = await file(client, kind="erasure", requester="subject", subject_id="cat")
    rid = filed["id"]
    await client.post(f"{BASE}/{rid}/identity", json={"verified": True})
    await rights_pass(pool, now=datetime.now(UTC))
    (cat,) = await refs_of(db, rid)
    tracker = RightsTracker(sealer)
    (own,) = await outbox_events(db, catalogue.ERASURE_COMPLETED)
    # The acknowledgement comes before its selection; the preferences service reports twice
    # (two event ids); the consent event is delivered twice in one batch.
    await apply(
        pool,
        tracker,
        [
            acknowledged(TENANT_ID, cat, rid, "billing"),
            own,
            own,
            service_completed(TENANT_ID, cat, rid),
        ],
    )
    await apply(pool, tracker, [service_completed(TENANT_ID, cat, rid)])
    row = await request_row(db, rid)
    assert row["state"] == "in-progress"  # the recipients were not selected yet
    await apply(pool, tracker, [selected(TENANT_ID, cat, rid, ["billing"])])
    row = await request_row(db, rid)
    assert row["state"] == "completed"
    services = await db.fetch("SELECT service, subjects FROM rights_request_services")
    assert {r["service"]: r["subjects"] for r in services} == {"consent": 1, "preferences": 1}
    (totals,) = await db.fetch("SELECT * FROM rights_request_recipients")
    assert (totals["selected"], totals["acknowledged"], totals["dead_lettered"]) == (1, 1, 0)
    claims = verify_certificate(
        row["certificate"], await jwks_of(client, TENANT_ID), str(TENANT_ID)
    )
    assert claims["subjects"]["ref"] == cat
    assert claims["request"]["requester"] == "subject"

    # Everything again, after completion: nothing changes, no second certificate.
    await apply(pool, tracker, [own, service_completed(TENANT_ID, cat, rid)])
    assert len(await outbox_events(db, catalogue.REQUEST_CLOSED)) == 1
    assert (await request_row(db, rid))["certificate"] == row["certificate"]


async def test_what_a_request_waits_for_is_fixed_at_receipt(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection, sealer: Sealer
) -> None:
    body = RightsRequestIn(kind=RequestKind.ERASURE, requester=Requester.TENANT, subject_id="dan")
    filed = await create_request(
        pool,
        tenant_id=TENANT_ID,
        body=body,
        subject_refs=["d" * 64],
        sealer=sealer,
        erasure=ErasurePolicy(services=("consent",), await_recipients=False),
        wake=lambda: None,  # the pass below runs at once
    )
    await rights_pass(pool, now=datetime.now(UTC))
    await apply(pool, RightsTracker(sealer), await outbox_events(db, catalogue.ERASURE_COMPLETED))
    row = await request_row(db, str(filed.id))
    assert row["state"] == "completed"  # only the consent service, no recipients


async def test_a_request_id_that_is_not_a_uuid_is_poison(pool: Pool, sealer: Sealer) -> None:
    with pytest.raises(PoisonMessage) as caught:
        await apply(pool, RightsTracker(sealer), [service_completed(TENANT_ID, "e" * 64, "nope")])
    assert caught.value.reason == "invalid-request-id"


async def test_a_correction_is_completed_by_the_tenant_with_a_certificate(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    erasure = await file(client, kind="erasure", requester="tenant", subject_id="x")
    refused = await client.post(f"{BASE}/{erasure['id']}/complete")
    assert refused.status_code == 409
    waiting = await file(client, kind="correction", requester="subject", subject_id="y")
    early = await client.post(f"{BASE}/{waiting['id']}/complete")
    assert early.status_code == 409  # identity not verified yet
    filed = await file(client, kind="correction", requester="tenant", subject_id="y")
    done = await client.post(f"{BASE}/{filed['id']}/complete")
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["state"] == "completed"
    claims = verify_certificate(
        body["certificate"], await jwks_of(client, TENANT_ID), str(TENANT_ID)
    )
    assert claims["request"]["kind"] == "correction"
    assert claims["services"] == []
    assert claims["recipients"] == []
    again = await client.post(f"{BASE}/{filed['id']}/complete")
    assert again.status_code == 409
    assert again.json()["type"] == "urn:consentry:problem:rights-request-closed"


async def test_a_forged_or_foreign_certificate_does_not_verify(
    client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    filed = await file(client, kind="correction", requester="tenant", subject_id="z")
    certificate = (await client.post(f"{BASE}/{filed['id']}/complete")).json()["certificate"]
    jwks = await jwks_of(client, TENANT_ID)
    assert verify_certificate(certificate, jwks, str(TENANT_ID))["jti"] == filed["id"]
    # Not with another tenant's keys (public too), nor as another tenant's certificate.
    other = await make_tenant("Other")
    with pytest.raises(JWException):
        verify_certificate(certificate, await jwks_of(client, other.tenant_id), str(TENANT_ID))
    with pytest.raises(ValueError, match="another tenant"):
        verify_certificate(certificate, jwks, str(other.tenant_id))
    # A changed claim breaks the signature.
    head, payload, signature = certificate.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["subjects"]["count"] = 0
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(JWException):
        verify_certificate(f"{head}.{forged_payload}.{signature}", jwks, str(TENANT_ID))


# --- End to end through the real broker


@pytest_asyncio.fixture
async def rights_topics(kafka_bootstrap: str) -> str:
    await create_topics(
        kafka_bootstrap,
        [
            TopicSpec(topics.RIGHTS),
            TopicSpec(topics.RIGHTS_ANSWERS),
            TopicSpec(topics.SUBPROCESSOR),
            TopicSpec(topics.dead_letter_topic("consent-rights-tracker"), partitions=1),
        ],
    )
    return kafka_bootstrap


async def test_end_to_end_through_the_broker(
    client: httpx.AsyncClient, app_dsn: str, db: asyncpg.Connection, rights_topics: str
) -> None:
    bootstrap = rights_topics
    stop = asyncio.Event()
    relay_producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await relay_producer.start()
    await producer.start()
    group = f"rights-tracker-{uuid.uuid4().hex[:8]}"
    tasks = [
        asyncio.create_task(
            OutboxRelay(app_dsn, relay_producer, RelayOptions(poll_interval=0.2)).run(stop)
        ),
        asyncio.create_task(
            run_rights_worker(RightsWorkerSettings(database_url=app_dsn, environment="test"), stop)
        ),
        asyncio.create_task(
            run_rights_tracker(
                RightsTrackerSettings(
                    database_url=app_dsn,
                    kafka_bootstrap_servers=bootstrap,
                    environment="test",
                    rights_tracker_group_id=group,
                ),
                stop,
            )
        ),
    ]
    try:
        filed = await file(client, kind="erasure", requester="subject", subject_id="eve")
        rid = filed["id"]
        await client.post(f"{BASE}/{rid}/identity", json={"verified": True})

        # The request reaches the topic; the preferences service and the notifier answer.
        def mine(record: object) -> bool:
            return rid.encode() in getattr(record, "value", b"")

        (requested,) = await collect(
            bootstrap,
            topics.RIGHTS,
            lambda kept: any(
                header(r, "ce_type") == catalogue.ERASURE_REQUESTED.name for r in kept
            ),
            keep=lambda r: mine(r) and header(r, "ce_type") == catalogue.ERASURE_REQUESTED.name,
            seconds=60,
        )
        eve = header(requested, "ce_subject")
        for event in (
            service_completed(TENANT_ID, eve, rid),
            selected(TENANT_ID, eve, rid, ["billing"]),
            acknowledged(TENANT_ID, eve, rid, "billing"),
        ):
            record = encode(event)
            await producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )

        (closed,) = await collect(
            bootstrap,
            topics.RIGHTS,
            bool,
            keep=lambda r: mine(r) and header(r, "ce_type") == catalogue.REQUEST_CLOSED.name,
            seconds=60,
        )
        message = rights_pb2.RequestClosed.FromString(closed.value)
        claims = verify_certificate(
            message.certificate, await jwks_of(client, TENANT_ID), str(TENANT_ID)
        )
        assert claims["jti"] == rid
        assert {s["service"] for s in claims["services"]} == {"consent", "preferences"}
        assert claims["recipients"][0]["recipient"] == "billing"
        assert claims["recipients"][0]["confirmed"] == 1
        status = (await client.get(f"{BASE}/{rid}")).json()
        assert status["state"] == "completed"
        assert status["certificate"] == message.certificate
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        await producer.stop()
        await relay_producer.stop()
