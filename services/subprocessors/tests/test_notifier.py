"""The notifier end to end: events on the real broker, the faust worker and the sender in
this process (as the `sender` command next to it, or, in the tests of `posting`, also as
the notifier's own sender), local webhook receivers on loopback that verify every notice with the
`standardwebhooks` library, acknowledgements through the API."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from consentry.eventing import catalogue
from consentry.eventing.envelope import utcnow
from consentry.rights.v1 import rights_pb2
from consentry.subprocessors.settings import NotifierSettings
from consentry.subprocessors.v1 import subprocessors_pb2

from .conftest import (
    Receivers,
    consent_withdrawn,
    erasure_requested,
    eventually,
    fail_first,
    notifier,
    ok,
    produce,
    published,
    register,
    sign_ack,
    signed_ack,
)


async def _deliveries(db: asyncpg.Connection, tenant: uuid.UUID) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT d.*, n.request_id, n.kind FROM deliveries d JOIN notices n"
            " ON n.tenant_id = d.tenant_id AND n.id = d.notice_id"
            " WHERE d.tenant_id = $1 ORDER BY d.created_at, d.id",
            tenant,
        )
    )


@pytest.fixture(params=[False, True], ids=["sender-command", "notifier-sender"])
def posting(
    request: pytest.FixtureRequest, notifier_settings: NotifierSettings
) -> NotifierSettings:
    """The notifier as deployed by default (the `sender` command posts what it makes) and as
    one process (`notifier_sender`: its own sender takes new deliveries over in the
    transaction that makes them)."""
    return notifier_settings.model_copy(update={"notifier_sender": request.param})


async def test_erasure_reaches_every_active_recipient_verified(
    client: httpx.AsyncClient,
    public: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    posting: NotifierSettings,
) -> None:
    hooks = {name: receivers.add(name) for name in ("pay", "bill", "partner", "retired")}
    registered: dict[str, dict[str, Any]] = {}
    for name, role, region in (
        ("pay", "payment", "SE"),
        ("bill", "billing", "DE"),
        ("partner", "joint-marketing", "US"),
        ("retired", "affiliate", "SE"),
    ):
        registered[name] = await register(client, name, hooks[name].url, role=role, region=region)
        hooks[name].secret = registered[name]["signing_secret"]
    await client.delete(f"/v1/recipients/{registered['retired']['id']}")
    event = erasure_requested(tenant, request_id="req-erasure-1")

    async with notifier(posting):
        await produce(posting.kafka_bootstrap_servers, [event])
        await eventually(
            lambda: _deliveries(db, tenant),
            lambda rows: len(rows) == 3 and all(r["status"] == "delivered" for r in rows),
        )

    # Every active recipient got exactly one notice, and it verified with its own secret.
    for name in ("pay", "bill", "partner"):
        assert len(hooks[name].received) == 1, name
        assert hooks[name].verified == hooks[name].received, name
        received = hooks[name].received[0]
        body = received.json
        assert body["type"] == "erasure.requested"
        assert body["tenant_id"] == str(tenant)
        assert body["subject_ref"] == event.subject_ref
        assert body["request_id"] == "req-erasure-1"
        assert body["request_kind"] == "erasure"
        assert body["recipient_id"] == registered[name]["id"]
        assert body["ack_url"] == "http://subprocessors.test/v1/acknowledgements"
        assert received.headers["webhook-id"] == body["webhook_id"]
        assert received.headers["webhook-id"] == "msg_" + uuid.UUID(body["delivery_id"]).hex
    assert hooks["retired"].received == []

    selected = await published(db, tenant, catalogue.RECIPIENTS_SELECTED)
    assert len(selected) == 1
    message = selected[0].message
    assert isinstance(message, subprocessors_pb2.RecipientsSelected)
    assert message.request_id == "req-erasure-1"
    assert message.kind == subprocessors_pb2.NOTICE_KIND_ERASURE
    assert sorted(message.recipient_ids) == sorted(
        registered[n]["id"] for n in ("pay", "bill", "partner")
    )

    # Art. 19 report: told, not yet confirmed.
    report = (await client.get("/v1/requests/req-erasure-1/recipients")).json()
    assert report["subjects"] == 1
    assert report["complete"] is False
    assert {r["name"]: r["status"] for r in report["recipients"]} == {
        "bill": "delivered",
        "partner": "delivered",
        "pay": "delivered",
    }
    assert {r["name"]: r["outside_eea"] for r in report["recipients"]}["partner"] is True
    assert all(r["first_notified_at"] and r["attempts"] == 1 for r in report["recipients"])

    # Each confirms by a signed callback (a new webhook-id); a repeat changes nothing.
    for name in ("pay", "bill", "partner"):
        notice = hooks[name].received[0].json
        raw, headers = sign_ack(
            hooks[name].secret,
            {"webhook_id": notice["webhook_id"], "recipient_id": notice["recipient_id"]},
        )
        first = await public.post("/v1/acknowledgements", content=raw, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()["already_acknowledged"] is False
    again = await public.post("/v1/acknowledgements", content=raw, headers=headers)
    assert again.status_code == 200
    assert again.json()["already_acknowledged"] is True
    assert again.json()["acknowledged_at"] == first.json()["acknowledged_at"]

    acknowledged = await published(db, tenant, catalogue.DELIVERY_ACKNOWLEDGED)
    assert len(acknowledged) == 3
    report = (await client.get("/v1/requests/req-erasure-1/recipients")).json()
    assert report["complete"] is True
    assert all(r["status"] == "acknowledged" and r["acknowledged_at"] for r in report["recipients"])


async def test_forged_stale_and_unknown_acknowledgements_are_refused(
    client: httpx.AsyncClient,
    public: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
) -> None:
    hook = receivers.add("pay")
    created = await register(client, "pay", hook.url)
    hook.secret = created["signing_secret"]
    other = await register(client, "other", receivers.add("other").url)
    async with notifier(notifier_settings):
        await produce(notifier_settings.kafka_bootstrap_servers, [erasure_requested(tenant)])
        await eventually(lambda: _deliveries(db, tenant), lambda rows: len(rows) == 2)
    delivery = next(
        r for r in await _deliveries(db, tenant) if str(r["recipient_id"]) == created["id"]
    )
    ack = {"delivery_id": str(delivery["id"]), "recipient_id": created["id"]}

    # Signed with another recipient's secret: forged.
    raw, headers = sign_ack(other["signing_secret"], ack)
    refused = await public.post("/v1/acknowledgements", content=raw, headers=headers)
    assert refused.status_code == 401
    assert refused.json()["type"] == "urn:consentry:problem:invalid-signature"
    # The body changed after signing.
    raw, headers = sign_ack(hook.secret, ack)
    tampered = raw.replace(b"}", b', "note": "x"}')
    refused = await public.post("/v1/acknowledgements", content=tampered, headers=headers)
    assert refused.json()["type"] == "urn:consentry:problem:invalid-signature"
    # No signature at all.
    refused = await public.post("/v1/acknowledgements", json=ack)
    assert refused.status_code == 401
    assert refused.json()["type"] == "urn:consentry:problem:invalid-signature"
    # Validly signed, but 10 minutes old (and 10 minutes ahead).
    for skew in (timedelta(minutes=-10), timedelta(minutes=10)):
        raw, headers = sign_ack(hook.secret, ack, at=utcnow() + skew)
        refused = await public.post("/v1/acknowledgements", content=raw, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["type"] == "urn:consentry:problem:stale-timestamp"
    # Unknown delivery, and a delivery of another recipient.
    raw, headers = sign_ack(hook.secret, {**ack, "delivery_id": str(uuid.uuid4())})
    missing = await public.post("/v1/acknowledgements", content=raw, headers=headers)
    assert missing.status_code == 404
    assert missing.json()["type"] == "urn:consentry:problem:delivery-not-found"
    raw, headers = sign_ack(other["signing_secret"], {**ack, "recipient_id": other["id"]})
    wrong = await public.post("/v1/acknowledgements", content=raw, headers=headers)
    assert wrong.status_code == 404

    # Nothing was recorded or published by any of these.
    rows = await _deliveries(db, tenant)
    assert all(row["acknowledged_at"] is None for row in rows)
    assert await published(db, tenant, catalogue.DELIVERY_ACKNOWLEDGED) == []


async def test_fails_three_times_then_acknowledges_in_its_answer(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    posting: NotifierSettings,
) -> None:
    hook = receivers.add("flaky")
    created = await register(client, "flaky", hook.url)
    hook.secret = created["signing_secret"]
    hook.behaviour = fail_first(3, signed_ack(hook.secret))
    async with notifier(posting):
        await produce(
            posting.kafka_bootstrap_servers,
            [erasure_requested(tenant, request_id="req-flaky")],
        )
        rows = await eventually(
            lambda: _deliveries(db, tenant),
            lambda rows: len(rows) == 1 and rows[0]["status"] == "acknowledged",
        )
    row = rows[0]
    assert row["attempts"] == 4
    assert row["acknowledged_via"] == "response"
    assert row["last_error"] is None
    # Four verified requests, all with the same webhook-id and body; one acknowledgement.
    assert len(hook.received) == 4
    assert hook.verified == hook.received
    assert {r.headers["webhook-id"] for r in hook.received} == {"msg_" + row["id"].hex}
    assert len({r.body for r in hook.received}) == 1
    acknowledged = await published(db, tenant, catalogue.DELIVERY_ACKNOWLEDGED)
    assert len(acknowledged) == 1
    message = acknowledged[0].message
    assert isinstance(message, subprocessors_pb2.DeliveryAcknowledged)
    assert message.attempts == 4
    assert message.webhook_id == "msg_" + row["id"].hex
    assert message.request_id == "req-flaky"
    report = (await client.get("/v1/requests/req-flaky/recipients")).json()
    assert report["recipients"][0]["status"] == "acknowledged"
    assert report["recipients"][0]["attempts"] == 4


async def test_always_failing_recipient_is_dead_lettered_and_flagged(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
) -> None:
    down = receivers.add("down")
    up = receivers.add("up")
    for hook in (down, up):
        hook.secret = (await register(client, hook.name, hook.url))["signing_secret"]
    down.behaviour = ok(status=500)
    up.behaviour = signed_ack(up.secret)
    settings = notifier_settings.model_copy(update={"retry_window_seconds": 2.0})
    async with notifier(settings):
        await produce(
            settings.kafka_bootstrap_servers, [erasure_requested(tenant, request_id="req-down")]
        )
        rows = await eventually(
            lambda: _deliveries(db, tenant),
            lambda rows: {r["status"] for r in rows} == {"dead_lettered", "acknowledged"},
        )
    dead = next(r for r in rows if r["status"] == "dead_lettered")
    assert dead["flagged_at"] is not None
    assert dead["last_error"] == "http-500"
    assert dead["attempts"] >= 1  # as many as fit in the window (at least two, unless the
    # machine is so busy that the first attempt came late)
    assert dead["next_attempt_at"] is None
    assert len(down.received) == dead["attempts"]
    assert {r.headers["webhook-id"] for r in down.received} == {"msg_" + dead["id"].hex}

    dead_lettered = await published(db, tenant, catalogue.DELIVERY_DEAD_LETTERED)
    assert len(dead_lettered) == 1
    message = dead_lettered[0].message
    assert isinstance(message, subprocessors_pb2.DeliveryDeadLettered)
    assert message.last_error == "http-500"
    assert message.request_id == "req-down"
    assert message.attempts == dead["attempts"]

    escalation = (await client.get("/v1/deliveries", params={"status": "dead_lettered"})).json()
    assert [d["id"] for d in escalation["deliveries"]] == [str(dead["id"])]
    assert escalation["deliveries"][0]["recipient_name"] == "down"
    assert escalation["deliveries"][0]["webhook_id"] == "msg_" + dead["id"].hex
    report = (await client.get("/v1/requests/req-down/recipients")).json()
    by_name = {r["name"]: r for r in report["recipients"]}
    assert by_name["down"]["status"] == "dead_lettered"
    assert by_name["down"]["flagged"] is True
    assert by_name["up"]["status"] == "acknowledged"
    assert report["complete"] is True


async def test_withdrawal_reaches_only_recipients_of_that_purpose(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
) -> None:
    ads = receivers.add("ads")
    joint = receivers.add("joint")
    pay = receivers.add("pay")
    ads.secret = (await register(client, "ads", ads.url, role="affiliate", purposes=["targeting"]))[
        "signing_secret"
    ]
    joint.secret = (
        await register(
            client,
            "joint",
            joint.url,
            role="joint-marketing",
            purposes=["joint-marketing", "targeting"],
        )
    )["signing_secret"]
    pay.secret = (await register(client, "pay", pay.url))["signing_secret"]
    ref = "ab" * 32
    async with notifier(notifier_settings):
        await produce(
            notifier_settings.kafka_bootstrap_servers,
            [
                consent_withdrawn(tenant, "performance"),  # nobody receives data for it
                consent_withdrawn(tenant, "joint-marketing", ref),
                consent_withdrawn(tenant, "targeting", ref),
            ],
        )
        await eventually(
            lambda: _deliveries(db, tenant),
            lambda rows: len(rows) == 3 and all(r["status"] == "delivered" for r in rows),
        )
    assert pay.received == []
    assert [r.json["purposes"] for r in ads.verified] == [["targeting"]]
    assert sorted(r.json["purposes"][0] for r in joint.verified) == ["joint-marketing", "targeting"]
    assert all(r.json["type"] == "consent.withdrawn" for r in ads.received + joint.received)
    assert all("request_id" not in r.json for r in ads.received + joint.received)
    selected = await published(db, tenant, catalogue.RECIPIENTS_SELECTED)
    assert len(selected) == 2  # none for `performance`
    assert all(
        e.message.kind == subprocessors_pb2.NOTICE_KIND_CONSENT_WITHDRAWN  # type: ignore[attr-defined]
        and e.message.request_id == ""  # type: ignore[attr-defined]
        for e in selected
    )
    assert await db.fetchval("SELECT count(*) FROM notices WHERE tenant_id = $1", tenant) == 2


async def test_erasure_without_recipients_still_answers(
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    client: httpx.AsyncClient,
    notifier_settings: NotifierSettings,
) -> None:
    child = erasure_requested(
        tenant, request_id="req-none", kind=rights_pb2.REQUEST_KIND_CHILD_DATA_ERASURE
    )
    async with notifier(notifier_settings):
        await produce(notifier_settings.kafka_bootstrap_servers, [child])
        selected = await eventually(
            lambda: published(db, tenant, catalogue.RECIPIENTS_SELECTED),
            lambda found: len(found) == 1,
        )
    assert list(selected[0].message.recipient_ids) == []  # type: ignore[attr-defined]
    report = (await client.get("/v1/requests/req-none/recipients")).json()
    assert report == {
        "request_id": "req-none",
        "subjects": 1,
        "first_selected_at": report["first_selected_at"],
        "complete": True,
        "recipients": [],
    }
    missing = await client.get("/v1/requests/req-unknown/recipients")
    assert missing.status_code == 404
    assert missing.json()["type"] == "urn:consentry:problem:request-not-found"
