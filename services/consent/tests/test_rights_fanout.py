"""The `rights` worker against a real PostgreSQL as the application's role: the consent
service's own data is erased with the fan-out events in chunked, resumable transactions;
access requests carry their export key; deadline warnings are published once; the worker
process wakes on NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from consentry.consent.db import set_tenant
from consentry.consent.rights import fanout, repository
from consentry.consent.rights.deadlines import Deadline
from consentry.consent.rights.fanout import (
    fan_out_chunks,
    rights_pass,
    run_rights_worker,
)
from consentry.consent.rights.service import export_key_context
from consentry.consent.sealing import Sealer
from consentry.consent.settings import RightsWorkerSettings
from consentry.consent.tenants.service import pseudonymise
from consentry.eventing import catalogue
from consentry.eventing.db import Connection, Pool
from consentry.eventing.testing import outbox_events
from consentry.rights.v1 import rights_pb2

from .conftest import TENANT_ID
from .test_rights_support import backdate, file, messages

pytestmark = pytest.mark.integration
BASE = "/v1/rights-requests"


@pytest_asyncio.fixture
async def pool(app_dsn: str) -> AsyncIterator[Pool]:
    """A pool logged in as the application's role (row-level security applies)."""
    created = await asyncpg.create_pool(app_dsn, min_size=1, max_size=4)
    assert created is not None
    yield created
    await created.close()


async def give(client: httpx.AsyncClient, subject_id: str, *purposes: str) -> None:
    for purpose in purposes:
        response = await client.put(
            f"/v1/subjects/{subject_id}/consents/{purpose}",
            json={"status": "given", "policy_version": "2026-01"},
        )
        assert response.status_code == 200, response.text


async def rows_of(db: asyncpg.Connection, table: str, subject_ref: str) -> int:
    count: int = await db.fetchval(
        f"SELECT count(*) FROM {table} WHERE subject_ref = $1",
        subject_ref,
    )
    return count


async def test_erasure_deletes_consents_own_data_and_fans_out_every_subject(
    client: httpx.AsyncClient,
    published_policy: str,
    pool: Pool,
    db: asyncpg.Connection,
    app_conn: asyncpg.Connection,
    subject_key: bytes,
) -> None:
    await give(client, "alice", "performance", "targeting")
    await give(client, "bob", "performance")
    alice, bob, nobody = (pseudonymise(subject_key, s) for s in ("alice", "bob", "nobody"))
    assert await rows_of(db, "consent_ledger", alice) == 2
    filed = await file(client, kind="erasure", requester="tenant", subject_ids=["alice", "nobody"])

    assert await rights_pass(pool, now=datetime.now(UTC), batch_size=1) == 2

    # The consent service's own data of alice is gone; bob's is untouched.
    for table in ("subjects", "consents", "consent_ledger"):
        assert await rows_of(db, table, alice) == 0, table
    assert await rows_of(db, "consent_ledger", bob) == 1
    gone = await client.get("/v1/subjects/alice/consents")
    assert gone.status_code == 404
    assert (await client.get("/v1/subjects/alice/proof")).status_code == 404

    requested = await outbox_events(db, catalogue.ERASURE_REQUESTED)
    completed = await outbox_events(db, catalogue.ERASURE_COMPLETED)
    assert [e.subject_ref for e in requested] == [alice, nobody]
    assert [e.subject_ref for e in completed] == [alice, nobody]
    # Requests and answers on topics of their own (ADR 0014).
    queued = await db.fetch(
        "SELECT DISTINCT event_type, topic FROM eventing_outbox WHERE event_type LIKE $1",
        "consentry.rights.%",
    )
    assert {(r["event_type"], r["topic"]) for r in queued} == {
        (catalogue.ERASURE_REQUESTED.name, "consentry.rights.v1"),
        (catalogue.ERASURE_COMPLETED.name, "consentry.rights.answers.v1"),
    }
    row = await db.fetchrow("SELECT * FROM rights_requests WHERE id = $1", uuid.UUID(filed["id"]))
    assert row is not None
    for event in requested:
        message = event.message
        assert isinstance(message, rights_pb2.ErasureRequested)
        assert event.key == f"{TENANT_ID}/{event.subject_ref}".encode()
        assert message.request_id == filed["id"]
        assert message.kind == rights_pb2.REQUEST_KIND_ERASURE
        assert message.requester == rights_pb2.REQUESTER_TENANT
        assert message.due_at.ToDatetime(tzinfo=UTC) == row["due_at"]
    answers = messages(completed, rights_pb2.ErasureCompleted)
    erased = {m.subject_ref: list(m.erased) for m in answers}
    assert erased == {alice: ["subject", "consents", "consent-ledger"], nobody: []}
    assert {m.service for m in answers} == {"consent"}
    assert row["fanned_out"] == 2
    assert row["fanned_out_at"] is not None

    # Nothing is sent twice.
    assert await rights_pass(pool, now=datetime.now(UTC)) == 0
    assert len(await outbox_events(db, catalogue.ERASURE_REQUESTED)) == 2
    progress = (await client.get(f"{BASE}/{filed['id']}")).json()["progress"]
    assert progress["fanned_out"] == 2
    assert progress["done"] == 0
    assert progress["expected_services"] == ["consent", "preferences"]


async def test_requests_are_fanned_out_concurrently_each_once(
    client: httpx.AsyncClient,
    published_policy: str,
    pool: Pool,
    db: asyncpg.Connection,
    subject_key: bytes,
) -> None:
    names = [f"many-{n}" for n in range(6)]
    for name in names:
        await give(client, name, "performance")
    # Two requests name the same subjects in opposite orders: they wait for each other's
    # subject locks (taken in sorted order) instead of deadlocking.
    named = [[names[0]], [names[1]], [names[2], names[3]], [names[3], names[2]], [names[4]]]
    filed = [
        await file(client, kind="erasure", requester="tenant", subject_ids=ids) for ids in named
    ]
    filed.append(await file(client, kind="erasure", requester="tenant", subject_id=names[5]))

    assert await rights_pass(pool, now=datetime.now(UTC), concurrency=4) == 8

    requested = messages(
        await outbox_events(db, catalogue.ERASURE_REQUESTED), rights_pb2.ErasureRequested
    )
    per_request: dict[str, list[str]] = {}
    for message in requested:
        per_request.setdefault(message.request_id, []).append(message.subject_ref)
    refs = [[pseudonymise(subject_key, name) for name in ids] for ids in [*named, [names[5]]]]
    assert {f["id"]: sorted(r) for f, r in zip(filed, refs, strict=True)} == {
        request_id: sorted(subjects) for request_id, subjects in per_request.items()
    }
    for name in names:
        assert await rows_of(db, "consents", pseudonymise(subject_key, name)) == 0
    fanned = await db.fetch(
        "SELECT fanned_out, subject_count FROM rights_requests WHERE id = ANY($1::uuid[])",
        [f["id"] for f in filed],
    )
    assert len(fanned) == len(filed)
    assert all(row["fanned_out"] == row["subject_count"] for row in fanned)
    # Nothing is sent twice.
    assert await rights_pass(pool, now=datetime.now(UTC), concurrency=4) == 0
    assert len(await outbox_events(db, catalogue.ERASURE_REQUESTED)) == 8


async def test_the_ledger_stays_append_only_for_the_application(
    app_conn: asyncpg.Connection,
) -> None:
    other_tenant = uuid.uuid4()
    async with app_conn.transaction():
        await set_tenant(app_conn, TENANT_ID)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.execute("DELETE FROM consent_ledger")
    for table in ("consents", "subjects", "rights_requests", "rights_request_subjects"):
        async with app_conn.transaction():
            await set_tenant(app_conn, TENANT_ID)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app_conn.execute(f"DELETE FROM {table}")
    # The erase function works only for the tenant the transaction is scoped to.
    async with app_conn.transaction():
        await set_tenant(app_conn, TENANT_ID)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.fetch(
                "SELECT * FROM consentry_erase_subjects($1, $2)", other_tenant, ["x"]
            )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.fetch("SELECT * FROM consentry_erase_subjects($1, $2)", TENANT_ID, ["x"])


async def test_erasing_ledger_rows_checks_consents_by_index(db: asyncpg.Connection) -> None:
    # Each deleted ledger row makes PostgreSQL look for consents still referencing it
    # (consents.event_id): without an index leading with that column, a sequential scan per
    # row (10.7 s instead of 0.09 s for 1,000 of 100,000 subjects; migration 0010).
    leading = await db.fetchval(
        """
        SELECT count(*) FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = 'consents'::regclass AND a.attname = 'event_id'
        """
    )
    assert leading >= 1


async def test_a_subjects_request_fans_out_only_after_identity_verification(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection
) -> None:
    filed = await file(client, kind="child-data-erasure", requester="subject", subject_id="kid")
    await rights_pass(pool, now=datetime.now(UTC))
    assert await outbox_events(db, catalogue.ERASURE_REQUESTED) == []
    await client.post(f"{BASE}/{filed['id']}/identity", json={"verified": True})
    await rights_pass(pool, now=datetime.now(UTC))
    (message,) = messages(
        await outbox_events(db, catalogue.ERASURE_REQUESTED), rights_pb2.ErasureRequested
    )
    assert message.kind == rights_pb2.REQUEST_KIND_CHILD_DATA_ERASURE
    assert message.requester == rights_pb2.REQUESTER_SUBJECT
    # The erasure has begun: it can no longer be rejected.
    refused = await client.post(f"{BASE}/{filed['id']}/reject", json={"reason": "too late"})
    assert refused.status_code == 409
    assert refused.json()["type"] == "urn:consentry:problem:rights-request-state-conflict"


async def test_the_fan_out_resumes_after_the_last_committed_chunk(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection
) -> None:
    ids = [f"user-{n}" for n in range(7)]
    filed = await file(client, kind="erasure", requester="tenant", subject_ids=ids)
    request_id = uuid.UUID(filed["id"])
    # One chunk commits, then the worker "dies".
    assert await fan_out_chunks(
        pool, tenant_id=TENANT_ID, request_ids=[request_id], batch_size=3
    ) == (3, [request_id])
    assert len(await outbox_events(db, catalogue.ERASURE_REQUESTED)) == 3
    # A chunk that fails rolls back whole: nothing of it is queued or counted.
    with contextlib.suppress(asyncpg.PostgresError):
        async with pool.acquire() as conn, conn.transaction():
            await set_tenant(conn, TENANT_ID)
            await conn.execute("UPDATE rights_requests SET fanned_out = 5")
            raise asyncpg.PostgresError("crash")
    # The next worker continues after the third subject: every subject exactly once.
    assert await rights_pass(pool, now=datetime.now(UTC), batch_size=3) == 4
    requested = await outbox_events(db, catalogue.ERASURE_REQUESTED)
    refs = await db.fetch(
        "SELECT subject_ref FROM rights_request_subjects WHERE request_id = $1 ORDER BY n",
        request_id,
    )
    assert [e.subject_ref for e in requested] == [r["subject_ref"] for r in refs]


async def test_an_access_request_carries_its_export_key(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection, sealer: Sealer
) -> None:
    filed = await file(client, kind="access", requester="tenant", subject_ids=["a", "b"])
    await rights_pass(pool, now=datetime.now(UTC))
    events = await outbox_events(db, catalogue.ACCESS_REQUESTED)
    assert len(events) == 2
    row = await db.fetchrow(
        "SELECT export_public_key, export_key_sealed FROM rights_requests WHERE id = $1",
        uuid.UUID(filed["id"]),
    )
    assert row is not None
    private = X25519PrivateKey.from_private_bytes(
        sealer.open(
            row["export_key_sealed"], context=export_key_context(TENANT_ID, uuid.UUID(filed["id"]))
        )
    )
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public == row["export_public_key"]
    for message in messages(events, rights_pb2.AccessRequested):
        assert message.export_public_key == public
        assert message.request_id == filed["id"]
    assert await outbox_events(db, catalogue.ERASURE_REQUESTED) == []


async def test_deadline_warnings_are_published_once_per_status_and_due_instant(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    overdue = await file(client, kind="correction", requester="tenant", subject_id="late")
    soon = await file(client, kind="correction", requester="tenant", subject_id="soon")
    paused = await file(client, kind="erasure", requester="subject", subject_id="waiting")
    fresh = await file(client, kind="correction", requester="tenant", subject_id="fresh")
    await backdate(db, overdue["id"], now - timedelta(days=45))
    await backdate(db, paused["id"], now - timedelta(days=45), paused=True)
    for days in range(26, 31):
        received = now - timedelta(days=days)
        if Deadline.start(received, "Europe/Stockholm", "SE").status(now) == "due_soon":
            await backdate(db, soon["id"], received)
            break
    else:
        pytest.fail("no receipt date gives a due-soon request")

    await rights_pass(pool, now=now)
    await rights_pass(pool, now=now + timedelta(minutes=1))
    warnings = await outbox_events(db, catalogue.REQUEST_DEADLINE)
    statuses = {m.request_id: m.status for m in messages(warnings, rights_pb2.RequestDeadline)}
    assert statuses == {
        overdue["id"]: rights_pb2.DEADLINE_STATUS_OVERDUE,
        soon["id"]: rights_pb2.DEADLINE_STATUS_DUE_SOON,
    }
    assert len(warnings) == 2
    assert all(e.key == f"{TENANT_ID}/requests".encode() for e in warnings)

    # Extended by a month, the due-soon request is on track; once overdue for its new due
    # instant, that is reported (once).
    extended = await client.post(
        f"{BASE}/{soon['id']}/extend",
        json={"months": 1, "reason": "complex", "notice_sent_at": now.isoformat()},
    )
    assert extended.status_code == 200, extended.text
    new_due = datetime.fromisoformat(extended.json()["deadline"]["due_at"])
    await rights_pass(pool, now=datetime.now(UTC))
    assert len(await outbox_events(db, catalogue.REQUEST_DEADLINE)) == 2
    await rights_pass(pool, now=new_due + timedelta(seconds=1))
    await rights_pass(pool, now=new_due + timedelta(seconds=2))
    latest = (await outbox_events(db, catalogue.REQUEST_DEADLINE))[2:]
    # By then the fresh request (due a month earlier) is overdue too; the paused one never.
    later = messages(latest, rights_pb2.RequestDeadline)
    assert sorted((m.request_id, m.status) for m in later) == sorted(
        [
            (soon["id"], rights_pb2.DEADLINE_STATUS_OVERDUE),
            (fresh["id"], rights_pb2.DEADLINE_STATUS_OVERDUE),
        ]
    )


async def test_the_worker_process_wakes_on_notify(
    client: httpx.AsyncClient, app_dsn: str, db: asyncpg.Connection
) -> None:
    settings = RightsWorkerSettings(
        database_url=app_dsn, environment="test", rights_interval_seconds=600
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_rights_worker(settings, stop))
    try:
        first = await file(client, kind="erasure", requester="tenant", subject_ids=["p", "q"])
        await wait_for_events(db, 2)  # the worker's first round (or its first NOTIFY)
        row = await db.fetchrow(
            "SELECT fanned_out FROM rights_requests WHERE id = $1", uuid.UUID(first["id"])
        )
        assert row is not None
        assert row["fanned_out"] == 2
        # Now the worker waits (600 s); only the NOTIFY at commit can wake it in time.
        await file(client, kind="erasure", requester="tenant", subject_ids=["r"])
        await wait_for_events(db, 3)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)


async def wait_for_events(db: asyncpg.Connection, count: int, seconds: float = 30) -> None:
    """Poll the outbox until it holds `count` ErasureRequested events."""
    async with asyncio.timeout(seconds):
        while len(await outbox_events(db, catalogue.ERASURE_REQUESTED)) < count:
            await asyncio.sleep(0.05)


async def test_a_request_fanned_out_near_its_deadline_is_warned_about_and_others_are_not(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection
) -> None:
    """The scan says which requests need their deadline looked at: one being fanned out
    far from its due date is only fanned out (no deadline transaction), one being fanned
    out past its due date is fanned out and reported overdue in the same pass."""
    now = datetime.now(UTC)
    fresh = await file(client, kind="erasure", requester="tenant", subject_id="on-time")
    late = await file(client, kind="erasure", requester="tenant", subject_id="past-due")
    await backdate(db, late["id"], now - timedelta(days=45))

    async with pool.acquire() as conn, conn.transaction():
        scan = {
            str(row["request_id"]): (row["fan_out"], row["deadline"])
            for row in await repository.open_requests(conn, due_by=now + timedelta(days=7))
        }
    assert scan == {fresh["id"]: (True, False), late["id"]: (True, True)}

    assert await rights_pass(pool, now=now) == 2
    warnings = messages(
        await outbox_events(db, catalogue.REQUEST_DEADLINE), rights_pb2.RequestDeadline
    )
    assert [(m.request_id, m.status) for m in warnings] == [
        (late["id"], rights_pb2.DEADLINE_STATUS_OVERDUE)
    ]


async def test_a_tenants_waiting_requests_are_fanned_out_together_fewest_subjects_first(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection
) -> None:
    bulk = await file(
        client, kind="erasure", requester="tenant", subject_ids=[f"b{n}" for n in range(7)]
    )
    singles = [
        await file(client, kind="erasure", requester="tenant", subject_id=f"s{n}") for n in range(3)
    ]
    ids = [uuid.UUID(f["id"]) for f in (bulk, *singles)]

    # One transaction of at most 4 subjects: the three single ones first, then the bulk's.
    assert await fan_out_chunks(pool, tenant_id=TENANT_ID, request_ids=ids, batch_size=4) == (
        4,
        [ids[0]],
    )
    rows = await db.fetch(
        "SELECT id, fanned_out, fanned_out_at FROM rights_requests WHERE id = ANY($1::uuid[])",
        ids,
    )
    fanned = {row["id"]: row["fanned_out"] for row in rows}
    assert fanned == {ids[0]: 1, ids[1]: 1, ids[2]: 1, ids[3]: 1}
    # All three singles were finished in the same transaction (its one clock reading).
    assert len({row["fanned_out_at"] for row in rows if row["id"] != ids[0]}) == 1

    # The rest, 4 and then 2 of the bulk's: every subject once, in order.
    assert await rights_pass(pool, now=datetime.now(UTC), batch_size=4) == 6
    requested = messages(
        await outbox_events(db, catalogue.ERASURE_REQUESTED), rights_pb2.ErasureRequested
    )
    of_bulk = [m.subject_ref for m in requested if m.request_id == bulk["id"]]
    refs = await db.fetch(
        "SELECT subject_ref FROM rights_request_subjects WHERE request_id = $1 ORDER BY n",
        ids[0],
    )
    assert of_bulk == [r["subject_ref"] for r in refs]
    assert len(requested) == 10


async def test_a_subject_in_two_requests_fanned_out_together_is_erased_by_the_first(
    client: httpx.AsyncClient,
    published_policy: str,
    pool: Pool,
    db: asyncpg.Connection,
    subject_key: bytes,
) -> None:
    await give(client, "twice", "performance")
    filed = [
        await file(client, kind="erasure", requester="tenant", subject_id="twice") for _ in range(2)
    ]
    assert await rights_pass(pool, now=datetime.now(UTC)) == 2

    answers = messages(
        await outbox_events(db, catalogue.ERASURE_COMPLETED), rights_pb2.ErasureCompleted
    )
    erased = {m.request_id: list(m.erased) for m in answers}
    first, second = sorted(f["id"] for f in filed)  # one transaction takes them in id order
    assert erased == {first: ["subject", "consents", "consent-ledger"], second: []}
    assert await rows_of(db, "consents", pseudonymise(subject_key, "twice")) == 0


async def test_a_request_that_fails_does_not_hold_up_the_others(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection, subject_key: bytes
) -> None:
    good = await file(client, kind="erasure", requester="tenant", subject_id="fine")
    bad = await file(client, kind="erasure", requester="tenant", subject_id="refused")
    # The database refuses to fan out anything about one subject.
    refused = pseudonymise(subject_key, "refused")
    await db.execute(
        f"""
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.message_key = convert_to('{TENANT_ID}/{refused}', 'UTF8') THEN
                RAISE EXCEPTION 'refused';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON eventing_outbox FOR EACH ROW
            WHEN (NEW.event_type = '{catalogue.ERASURE_REQUESTED.name}')
            EXECUTE FUNCTION refuse();
        """
    )
    try:
        # The tenant's shared transaction fails; each request is then tried on its own.
        assert await rights_pass(pool, now=datetime.now(UTC)) == 1
    finally:
        await db.execute("DROP TRIGGER refuse ON eventing_outbox; DROP FUNCTION refuse()")
    fanned = {
        str(row["id"]): row["fanned_out"]
        for row in await db.fetch("SELECT id, fanned_out FROM rights_requests")
    }
    assert fanned == {good["id"]: 1, bad["id"]: 0}
    # Retried in the next round, and nothing went out twice.
    assert await rights_pass(pool, now=datetime.now(UTC)) == 1
    assert len(await outbox_events(db, catalogue.ERASURE_REQUESTED)) == 2


async def test_the_erasure_of_a_chunk_keeps_the_default_plan_caching(
    db: asyncpg.Connection,
) -> None:
    # The worker's sessions plan every statement for its parameters; planned for a chunk's
    # 1,000 references the function's deletions scanned whole tables (migration 0012).
    config = await db.fetchval(
        "SELECT proconfig FROM pg_proc WHERE proname = 'consentry_erase_subjects'"
    )
    assert "plan_cache_mode=auto" in config


async def test_the_subjects_statistics_are_brought_up_to_date_past_autovacuums_threshold(
    pool: Pool, db: asyncpg.Connection
) -> None:
    # Migration 0014: the application's role may not ANALYZE; the function analyzes for it
    # when the rows added exceed autovacuum's default threshold (50 + 10 % of those known).
    await db.execute("ANALYZE rights_request_subjects")  # known = the rows there are
    rows = await db.fetchval("SELECT count(*) FROM rights_request_subjects")
    threshold = 50 + rows // 10
    async with pool.acquire() as conn:
        assert await repository.subjects_added(conn, threshold) is False
        assert await repository.subjects_added(conn, threshold + 1) is True
    analyzed = await db.fetchval(
        "SELECT reltuples FROM pg_class WHERE oid = 'rights_request_subjects'::regclass"
    )
    assert analyzed == await db.fetchval("SELECT count(*) FROM rights_request_subjects")


async def test_a_bulk_request_asks_for_statistics_before_its_first_chunk_only(
    client: httpx.AsyncClient, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = repository.subjects_added

    async def spy(conn: Connection, added: int) -> bool:
        calls.append(added)
        return await real(conn, added)

    monkeypatch.setattr(fanout, "BULK_SUBJECTS", 5)
    monkeypatch.setattr(repository, "subjects_added", spy)
    small = await file(client, kind="erasure", requester="tenant", subject_ids=["s-1", "s-2"])
    bulk = await file(
        client, kind="erasure", requester="tenant", subject_ids=[f"b-{n}" for n in range(7)]
    )
    ids = [uuid.UUID(small["id"]), uuid.UUID(bulk["id"])]
    # First chunk: the small request whole and 2 of the bulk one's 7 subjects.
    assert await fan_out_chunks(pool, tenant_id=TENANT_ID, request_ids=ids, batch_size=4) == (
        4,
        [ids[1]],
    )
    assert calls == [7]
    assert await fan_out_chunks(pool, tenant_id=TENANT_ID, request_ids=ids, batch_size=4) == (
        4,
        [ids[1]],
    )
    assert calls == [7]  # not again for the rest of it
