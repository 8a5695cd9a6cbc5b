"""The preferences service's part of rights requests: erasure by crypto-shredding, and its
part of an access export (real PostgreSQL; events encoded and decoded as on the wire)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from consentry.eventing import catalogue
from consentry.eventing.db import Connection
from consentry.eventing.envelope import Event, ReceivedEvent, decode, encode
from consentry.eventing.sealing import Sealer, SealingError, open_part
from consentry.eventing.testing import outbox_events
from consentry.preferences import contacts
from consentry.preferences.rights import worker
from consentry.preferences.rights.worker import RightsHandler
from consentry.preferences.tenants import load_keys
from consentry.preferences.v1 import lists_pb2
from consentry.rights.v1 import rights_pb2

from .conftest import TENANT_ID, ref_of, set_consent

pytestmark = pytest.mark.asyncio(loop_scope="session")
EMAIL = "grace.hopper@example.com"
REF = ref_of(EMAIL)


def _wire(
    message: rights_pb2.ErasureRequested | rights_pb2.AccessRequested | rights_pb2.ErasureCompleted,
    subject_ref: str = REF,
    traceparent: str | None = None,
) -> ReceivedEvent:
    event_type = {
        rights_pb2.ErasureRequested: catalogue.ERASURE_REQUESTED,
        rights_pb2.AccessRequested: catalogue.ACCESS_REQUESTED,
        rights_pb2.ErasureCompleted: catalogue.ERASURE_COMPLETED,
    }[type(message)]
    record = encode(
        Event(
            type=event_type,
            tenant_id=str(TENANT_ID),
            subject_ref=subject_ref,
            message=message,
            source="/consentry/consent",
            traceparent=traceparent,
        )
    )
    return decode(record.key, record.value, record.headers)


async def _subject_with_contact(
    client: httpx.AsyncClient, db: asyncpg.Connection, email: str = EMAIL
) -> None:
    await set_consent(db, ref_of(email), given=True)
    joined = await client.patch(
        f"/v1/subjects/{email}/preferences",
        json={"changes": [{"topic": "product-news", "channel": "email", "subscribed": True}]},
    )
    assert joined.status_code == 200, joined.text
    stored = await client.put(f"/v1/subjects/{email}/contact", json={"email": email})
    assert stored.status_code == 204


async def test_erasure_shreds_the_contact_and_keeps_the_subject_suppressed(
    client: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
    app_dsn: str,
    sealer: Sealer,
) -> None:
    await _subject_with_contact(client, db)
    before = await db.fetchrow("SELECT * FROM subjects WHERE subject_ref = $1", REF)
    assert before is not None
    sealed_contact = bytes(before["contact_email_sealed"])
    request_id = str(uuid.uuid4())
    erasure = _wire(
        rights_pb2.ErasureRequested(
            tenant_id=str(TENANT_ID),
            subject_ref=REF,
            request_id=request_id,
            kind=rights_pb2.REQUEST_KIND_ERASURE,
        )
    )
    conn = await asyncpg.connect(app_dsn)  # as the worker: the app role, RLS applies
    try:
        async with conn.transaction():
            await RightsHandler(sealer)(conn, erasure)
    finally:
        await conn.close()

    for table in ("subjects", "preferences", "consent_copy"):
        assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE subject_ref = $1", REF) == 0
    # The ciphertext a backup or a topic may still hold no longer opens: its data key is gone,
    # and the tenant's key-encryption key alone does not open it.
    keys = await load_keys(db, sealer, TENANT_ID)
    assert keys is not None
    with pytest.raises(SealingError):
        contacts.open_contact(keys.kek, REF, sealed_contact)
    # Nothing in the database holds the address any more, in any column.
    for table in ("subjects", "preferences", "consent_copy", "eventing_outbox", "tenants"):
        rows = await db.fetch(f"SELECT * FROM {table}")
        assert EMAIL not in repr([dict(row) for row in rows])
    suppression = await db.fetchrow(
        "SELECT reason FROM list_suppressions WHERE subject_ref = $1", REF
    )
    assert suppression is not None
    assert suppression["reason"] == "erased"

    (completed,) = await outbox_events(db, catalogue.ERASURE_COMPLETED)
    message = completed.message
    assert isinstance(message, rights_pb2.ErasureCompleted)
    assert (message.request_id, message.service) == (request_id, "preferences")
    assert set(message.erased) >= {"preferences", "contact", "data-key", "subject"}
    suppressed = await outbox_events(db, catalogue.LIST_MEMBER_SUPPRESSED)
    reasons = [
        s.message.reason
        for s in suppressed
        if isinstance(s.message, lists_pb2.ListMemberSuppressed)
    ]
    assert reasons == [lists_pb2.SUPPRESSION_REASON_ERASED]


def _erasure(subject_ref: str, request_id: str, traceparent: str | None = None) -> ReceivedEvent:
    message = rights_pb2.ErasureRequested(
        tenant_id=str(TENANT_ID),
        subject_ref=subject_ref,
        request_id=request_id,
        kind=rights_pb2.REQUEST_KIND_ERASURE,
    )
    return _wire(message, subject_ref, traceparent)


async def test_a_batch_of_erasures_answers_as_one_event_at_a_time_would(
    client: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
    app_dsn: str,
    sealer: Sealer,
) -> None:
    emails = ["ada@example.com", "alan@example.com"]
    for email in emails:
        await _subject_with_contact(client, db, email)
    ada, alan = (ref_of(email) for email in emails)
    unknown = ref_of("nobody@example.com")
    # Ada twice (a second request names her again), an access request in between, a subject
    # this service never knew.
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    access_id = uuid.uuid4()
    access = _wire(
        rights_pb2.AccessRequested(
            tenant_id=str(TENANT_ID),
            subject_ref=alan,
            request_id=str(access_id),
            export_public_key=public,
        ),
        alan,
    )
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    batch = [
        _erasure(ada, "r1", f"00-{trace_id}-00f067aa0ba902b7-01"),
        access,  # before Alan's erasure: his part still holds his contact
        _erasure(alan, "r1"),
        _erasure(ada, "r2"),
        _erasure(unknown, "r1"),
    ]
    conn = await asyncpg.connect(app_dsn)  # as the worker: the app role, RLS applies
    try:
        async with conn.transaction():
            await RightsHandler(sealer).batch(conn, batch)
    finally:
        await conn.close()

    for table in ("subjects", "preferences", "consent_copy"):
        left = await db.fetchval(
            f"SELECT count(*) FROM {table} WHERE subject_ref = ANY($1::text[])", [ada, alan]
        )
        assert left == 0, table
    answers = await outbox_events(db, catalogue.ERASURE_COMPLETED)
    completed = [
        event.message for event in answers if isinstance(event.message, rights_pb2.ErasureCompleted)
    ]
    # Each answer continues its request's trace: the traced one only.
    traces = [(event.traceparent or "").split("-")[1:2] for event in answers]
    assert traces == [[trace_id], [], [], []]
    full = ["preferences", "consent-copy", "subject", "contact", "data-key"]
    assert [(m.subject_ref, m.request_id, list(m.erased)) for m in completed] == [
        (ada, "r1", full),
        (alan, "r1", full),
        (ada, "r2", []),
        (unknown, "r1", []),
    ]
    suppressed = await db.fetch(
        "SELECT subject_ref, reason FROM list_suppressions WHERE subject_ref = ANY($1::text[])",
        [ada, alan, unknown],
    )
    assert sorted((row["subject_ref"], row["reason"]) for row in suppressed) == sorted(
        (ref, "erased") for ref in (ada, alan, unknown)
    )
    (ready,) = await outbox_events(db, catalogue.ACCESS_PART_READY)
    assert isinstance(ready.message, rights_pb2.AccessPartReady)
    part = json.loads(
        open_part(
            private,
            ready.message.sealed_part,
            tenant_id=TENANT_ID,
            request_id=access_id,
            service="preferences",
        )
    )
    assert part["contact"] == {"email": "alan@example.com"}


async def test_access_part_is_sealed_to_the_request_key(
    client: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
    app_dsn: str,
    sealer: Sealer,
) -> None:
    await _subject_with_contact(client, db)
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    request_id = uuid.uuid4()
    access = _wire(
        rights_pb2.AccessRequested(
            tenant_id=str(TENANT_ID),
            subject_ref=REF,
            request_id=str(request_id),
            export_public_key=public,
        )
    )
    conn = await asyncpg.connect(app_dsn)
    try:
        async with conn.transaction():
            await RightsHandler(sealer)(conn, access)
    finally:
        await conn.close()
    (ready,) = await outbox_events(db, catalogue.ACCESS_PART_READY)
    message = ready.message
    assert isinstance(message, rights_pb2.AccessPartReady)
    assert EMAIL.encode() not in message.sealed_part  # on the topic only sealed
    part = json.loads(
        open_part(
            private,
            message.sealed_part,
            tenant_id=TENANT_ID,
            request_id=request_id,
            service="preferences",
        )
    )
    assert part["contact"] == {"email": EMAIL}
    assert part["subject_ref"] == REF
    news = [t for t in part["preferences"]["topics"] if t["topic"] == "product-news"]
    assert news[0]["channels"]["email"] is True
    with pytest.raises(ValueError, match="does not open"):
        open_part(
            X25519PrivateKey.generate(),
            message.sealed_part,
            tenant_id=TENANT_ID,
            request_id=request_id,
            service="preferences",
        )


async def test_other_services_answers_do_not_cut_a_run_of_erasures(
    client: httpx.AsyncClient,
    topics: list[str],
    db: asyncpg.Connection,
    app_dsn: str,
    sealer: Sealer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bulk erasure reaches this service as requests interleaved with the other services'
    answers (same subject, same partition): the requests are still erased in one go."""
    emails = ["margaret@example.com", "edsger@example.com", "barbara@example.com"]
    for email in emails:
        await _subject_with_contact(client, db, email)
    refs = [ref_of(email) for email in emails]
    batch: list[ReceivedEvent] = []
    for ref in refs:
        batch.append(_erasure(ref, "bulk"))
        answer = rights_pb2.ErasureCompleted(
            tenant_id=str(TENANT_ID), subject_ref=ref, request_id="bulk", service="consent"
        )
        batch.append(_wire(answer, ref))
    calls: list[list[str]] = []
    erase_subjects = worker.erase_subjects

    async def counted(conn: Connection, tenant_id: uuid.UUID, refs: list[str]) -> Any:
        calls.append(list(refs))
        return await erase_subjects(conn, tenant_id, refs)

    monkeypatch.setattr(worker, "erase_subjects", counted)
    conn = await asyncpg.connect(app_dsn)
    try:
        async with conn.transaction():
            await RightsHandler(sealer).batch(conn, batch)
    finally:
        await conn.close()

    assert calls == [refs]  # one run, not three
    answers = await outbox_events(db, catalogue.ERASURE_COMPLETED)
    completed = [a.message for a in answers if isinstance(a.message, rights_pb2.ErasureCompleted)]
    assert [(m.subject_ref, m.service) for m in completed] == [(r, "preferences") for r in refs]
    left = await db.fetchval(
        "SELECT count(*) FROM subjects WHERE subject_ref = ANY($1::text[])", refs
    )
    assert left == 0
