"""The subprocessors service's answers to rights requests, made by the notifier through the
real broker and database: its erasure report (nothing erased), and its part of an access
export (who was told what about the subject, and the tenant's current recipients) sealed to
the request's key."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from consentry.eventing import catalogue
from consentry.eventing.sealing import open_part
from consentry.eventing.testing import Record, collect, header
from consentry.rights.v1 import rights_pb2
from consentry.subprocessors.settings import NotifierSettings

from .conftest import (
    DLQ,
    Receivers,
    access_requested,
    consent_withdrawn,
    erasure_requested,
    eventually,
    notifier,
    ok,
    produce,
    published,
    register,
    signed_ack,
)


async def _statuses(db: asyncpg.Connection, tenant: uuid.UUID) -> list[str]:
    rows = await db.fetch("SELECT status FROM deliveries WHERE tenant_id = $1", tenant)
    return [row["status"] for row in rows]


async def test_the_access_part_lists_who_was_told_and_the_current_recipients(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
) -> None:
    hooks = {name: receivers.add(name) for name in ("pay", "partner", "retired")}
    registered: dict[str, dict[str, Any]] = {}
    for name, fields in (
        ("pay", {"role": "payment", "region": "SE", "data_categories": ["payment history"]}),
        ("partner", {"role": "joint-marketing", "region": "US"}),
        ("retired", {"role": "affiliate", "region": "DE", "purposes": []}),
    ):
        purposes = fields.pop("purposes", ["marketing-email"])
        registered[name] = await register(
            client, name, hooks[name].url, purposes=purposes, **fields
        )
        hooks[name].secret = registered[name]["signing_secret"]
    hooks["pay"].behaviour = signed_ack(hooks["pay"].secret)  # acknowledged at once
    hooks["partner"].behaviour = hooks["retired"].behaviour = ok()  # delivered, unconfirmed
    subject, someone_else = secrets.token_hex(32), secrets.token_hex(32)
    erasure_id = str(uuid.uuid4())
    private = X25519PrivateKey.generate()
    access = access_requested(tenant, subject, private.public_key().public_bytes_raw())
    assert isinstance(access.message, rights_pb2.AccessRequested)

    async with notifier(notifier_settings):
        await produce(
            notifier_settings.kafka_bootstrap_servers,
            [
                consent_withdrawn(tenant, "marketing-email", subject),  # pay and partner
                consent_withdrawn(tenant, "marketing-email", someone_else),  # not the subject
                erasure_requested(tenant, subject, erasure_id),  # every active recipient
            ],
        )
        await eventually(
            lambda: _statuses(db, tenant),
            lambda statuses: len(statuses) == 7 and "pending" not in statuses,
        )
        retired = await client.delete(f"/v1/recipients/{registered['retired']['id']}")
        assert retired.status_code in (200, 204), retired.text
        await produce(notifier_settings.kafka_bootstrap_servers, [access])
        (ready,) = await eventually(
            lambda: published(db, tenant, catalogue.ACCESS_PART_READY), lambda found: len(found) > 0
        )

    message = ready.message
    assert isinstance(message, rights_pb2.AccessPartReady)
    assert (message.service, message.subject_ref) == ("subprocessors", subject)
    assert message.request_id == access.message.request_id
    assert b"partner" not in message.sealed_part  # sealed: unreadable on the topic
    opened = open_part(
        private,
        message.sealed_part,
        tenant_id=tenant,
        request_id=uuid.UUID(message.request_id),
        service="subprocessors",
    )
    text = opened.decode()
    # No webhook URL, no signing secret: only who the recipients are and what they were told.
    assert "http" not in text
    assert "whsec_" not in text
    assert all(r["signing_secret"] not in text for r in registered.values())
    part = json.loads(text)
    assert (part["service"], part["subject_ref"]) == ("subprocessors", subject)

    withdrawal, erasure = part["notices"]  # the subject's only, oldest first
    assert withdrawal["kind"] == "consent-withdrawn"
    assert (withdrawal["purposes"], withdrawal["request_id"]) == (["marketing-email"], None)
    told = {d["recipient"]["name"]: d for d in withdrawal["recipients"]}
    assert list(told) == ["partner", "pay"]
    assert told["pay"]["status"] == "acknowledged"
    assert told["pay"]["first_sent_at"]
    assert told["pay"]["acknowledged_at"]
    assert told["partner"]["status"] == "delivered"
    assert told["partner"]["acknowledged_at"] is None
    assert told["pay"]["recipient"] == {
        "id": registered["pay"]["id"],
        "name": "pay",
        "role": "payment",
        "region": "SE",
        "outside_eea": False,
        "purposes": ["marketing-email"],
        "data_categories": ["payment history"],
    }
    assert told["partner"]["recipient"]["outside_eea"] is True  # US
    assert (erasure["kind"], erasure["request_id"]) == ("erasure", erasure_id)
    assert erasure["request_kind"] == "erasure"
    assert [d["recipient"]["name"] for d in erasure["recipients"]] == ["partner", "pay", "retired"]
    # The recipients that receive the tenant's data now: the retired one no longer does.
    assert [(r["name"], r["role"]) for r in part["recipients"]] == [
        ("partner", "joint-marketing"),
        ("pay", "payment"),
    ]
    assert all(r["registered_at"] for r in part["recipients"])

    # The erasure was reported too: this service erases nothing (its notices are the record).
    (completed,) = await published(db, tenant, catalogue.ERASURE_COMPLETED)
    report = completed.message
    assert isinstance(report, rights_pb2.ErasureCompleted)
    assert (report.service, report.subject_ref, report.request_id) == (
        "subprocessors",
        subject,
        erasure_id,
    )
    assert list(report.erased) == []


async def test_an_access_request_no_part_could_answer_is_dead_lettered(
    db: asyncpg.Connection, tenant: uuid.UUID, notifier_settings: NotifierSettings
) -> None:
    subject = secrets.token_hex(32)
    private = X25519PrivateKey.generate()
    key = private.public_key().public_bytes_raw()
    good = access_requested(tenant, subject, key)
    assert isinstance(good.message, rights_pb2.AccessRequested)

    def ours(record: Record) -> bool:
        return (record.key or b"").split(b"/")[0].decode() == str(tenant)

    async with notifier(notifier_settings):
        await produce(
            notifier_settings.kafka_bootstrap_servers,
            [
                access_requested(tenant, subject, key[:16]),  # not an X25519 key
                access_requested(tenant, subject, key, request_id="not-a-uuid"),
                good,  # after both: answered
            ],
        )
        dead = await collect(
            notifier_settings.kafka_bootstrap_servers,
            DLQ,
            lambda kept: len(kept) >= 2,
            keep=ours,
            seconds=40,
        )
        (ready,) = await eventually(
            lambda: published(db, tenant, catalogue.ACCESS_PART_READY), lambda found: len(found) > 0
        )
    assert [header(record, "dlq.reason") for record in dead] == ["schema-violation"] * 2
    message = ready.message
    assert isinstance(message, rights_pb2.AccessPartReady)
    assert message.request_id == good.message.request_id
    # A subject nobody was told about, a tenant without recipients: an empty part, still sent
    # (the request waits for every service's part).
    opened = open_part(
        private,
        message.sealed_part,
        tenant_id=tenant,
        request_id=uuid.UUID(message.request_id),
        service="subprocessors",
    )
    assert json.loads(opened) == {
        "service": "subprocessors",
        "subject_ref": subject,
        "notices": [],
        "recipients": [],
    }
