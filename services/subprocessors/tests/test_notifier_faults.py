"""The notifier under faults: poison on its topics, a SIGKILLed worker, a lost
acknowledgement, a secret rotation, and tenants kept apart in the reports."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook
from werkzeug import Response

from consentry.eventing import catalogue, metrics, topics
from consentry.eventing.envelope import KafkaRecord, encode
from consentry.eventing.testing import collect, header
from consentry.subprocessors.settings import NotifierSettings

from .conftest import (
    DLQ,
    PUBLIC_URL,
    Behaviour,
    KeyedClient,
    Receiver,
    Receivers,
    erasure_requested,
    eventually,
    notifier,
    ok,
    produce,
    published,
    register,
    sign_ack,
    signed_ack,
)


async def _count(db: asyncpg.Connection, query: str, tenant: uuid.UUID) -> int:
    value: int = await db.fetchval(query, tenant)
    return value


async def test_poison_goes_to_the_dead_letter_topic_and_the_partition_moves_on(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
) -> None:
    hook = receivers.add("pay")
    hook.secret = (await register(client, "pay", hook.url))["signing_secret"]
    marker = secrets.token_hex(6)
    # One key for all: the same partition, so the good event comes after the poison.
    good = erasure_requested(tenant, request_id=f"req-{marker}")
    key = encode(good).key
    garbage = KafkaRecord(topics.RIGHTS, key, b"\xff\x00not protobuf", ())
    valid = encode(good)
    wrong_key = KafkaRecord(
        topics.RIGHTS, f"{tenant}/someone-else".encode(), valid.value, valid.headers
    )
    too_long = encode(erasure_requested(tenant, subject_ref="f" * 300))  # the database refuses it
    reasons_counted = ("key-mismatch", "missing-headers", "rejected-by-database")
    before = [_dead_letters_counted(reason) for reason in reasons_counted]
    async with notifier(notifier_settings):
        await produce(
            notifier_settings.kafka_bootstrap_servers, [garbage, wrong_key, too_long, good]
        )
        dead = await collect(
            notifier_settings.kafka_bootstrap_servers,
            DLQ,
            lambda kept: len(kept) >= 3,
            keep=lambda record: (
                record.key in (key, wrong_key.key, too_long.key)
                and header(record, "ce_tenant") in ("", str(tenant))
            ),
            seconds=60,
        )
        await eventually(
            lambda: _count(db, "SELECT count(*) FROM deliveries WHERE tenant_id = $1", tenant),
            lambda n: n == 1,
        )
    reasons = sorted(header(record, "dlq.reason") for record in dead)
    assert reasons == ["key-mismatch", "missing-headers", "rejected-by-database"]
    # ...and counted in consentry_dead_letters_total (the notifier runs in this process; other
    # tests' poison on the same topics may be counted too, so at least this test's one each).
    after = [_dead_letters_counted(reason) for reason in reasons_counted]
    assert all(a - b >= 1 for a, b in zip(after, before, strict=True)), (before, after)
    assert all(header(record, "dlq.consumer") == "subprocessor-notifier" for record in dead)
    assert all(header(record, "dlq.topic") == topics.RIGHTS for record in dead)
    # The good event behind the poison was applied, and its notice sent.
    await eventually(lambda: _wait_received(hook), lambda n: n >= 1)
    assert {r.json["request_id"] for r in hook.received} == {f"req-{marker}"}
    assert await _count(db, "SELECT count(*) FROM notices WHERE tenant_id = $1", tenant) == 1


def _dead_letters_counted(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "consentry_dead_letters_total", {"consumer": "subprocessor-notifier", "reason": reason}
    )
    return value or 0.0


async def _wait_received(hook: Receiver) -> int:
    return len(hook.verified)


class NotifierProcess:
    """`python -m consentry.subprocessors notifier` as a child process (SIGKILL-able)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consentry.subprocessors", "notifier"],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@pytest.fixture
def notifier_process(
    notifier_settings: NotifierSettings, tmp_path: Path
) -> Iterator[NotifierProcess]:
    env = {
        "CONSENTRY_DATABASE_URL": notifier_settings.database_url,
        "CONSENTRY_KAFKA_BOOTSTRAP_SERVERS": notifier_settings.kafka_bootstrap_servers,
        "CONSENTRY_ENVIRONMENT": "test",
        "CONSENTRY_LOG_LEVEL": "WARNING",
        "CONSENTRY_NOTIFIER_GROUP_ID": notifier_settings.notifier_group_id,
        "CONSENTRY_NOTIFIER_SESSION_TIMEOUT": "2",
        "CONSENTRY_NOTIFIER_COMMIT_INTERVAL": "0.2",
        # Its own sender too: the kill also drops posts in flight and deliveries taken over
        # in the notifier's transaction, whose leases must lapse and be posted again.
        "CONSENTRY_NOTIFIER_SENDER": "true",
        "CONSENTRY_PUBLIC_URL": PUBLIC_URL,
        "CONSENTRY_RETRY_BASE_SECONDS": "0.05",
        "CONSENTRY_RETRY_CAP_SECONDS": "0.2",
        "CONSENTRY_SENDER_POLL_SECONDS": "0.05",
        "CONSENTRY_WEBHOOK_TIMEOUT_SECONDS": "3",  # claims of the killed one lapse in 9.5 s
    }
    process = NotifierProcess(env, tmp_path / "notifier.log")
    yield process
    process.stop()


async def test_a_killed_notifier_loses_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
    notifier_process: NotifierProcess,
) -> None:
    hooks = [receivers.add(name) for name in ("pay", "bill")]
    for hook in hooks:
        hook.secret = (await register(client, hook.name, hook.url))["signing_secret"]
        hook.behaviour = signed_ack(hook.secret)
    bootstrap = notifier_settings.kafka_bootstrap_servers
    first = [erasure_requested(tenant, request_id=f"req-a{i}") for i in range(100)]
    second = [erasure_requested(tenant, request_id=f"req-b{i}") for i in range(100)]
    notices = "SELECT count(*) FROM notices WHERE tenant_id = $1"

    notifier_process.start()
    await produce(bootstrap, first)
    await eventually(
        lambda: _count(db, notices, tenant), lambda n: n >= 1, seconds=90, interval=0.01
    )
    notifier_process.kill()  # SIGKILL: no clean shutdown, no final offset commit
    made_before_kill = await _count(db, notices, tenant)
    await produce(bootstrap, second)
    notifier_process.start()
    await eventually(
        lambda: _count(
            db,
            "SELECT count(*) FROM deliveries WHERE tenant_id = $1 AND status = 'acknowledged'",
            tenant,
        ),
        lambda n: n == 400,
        seconds=120,
    )
    assert notifier_process.stop() == 0
    assert made_before_kill < 200

    # Every request of both batches: one notice, one delivery per recipient, acknowledged.
    rows = await db.fetch(
        "SELECT n.request_id, count(d.*) AS deliveries FROM notices n"
        " JOIN deliveries d ON d.tenant_id = n.tenant_id AND d.notice_id = n.id"
        " WHERE n.tenant_id = $1 GROUP BY n.request_id",
        tenant,
    )
    assert {row["request_id"] for row in rows} == {e.message.request_id for e in first + second}  # type: ignore[attr-defined]
    assert all(row["deliveries"] == 2 for row in rows)
    # Each recipient saw every notice verified, under one webhook-id per delivery (a repeat
    # after the kill carries the same id).
    for hook in hooks:
        assert hook.verified == hook.received
        assert len({r.headers["webhook-id"] for r in hook.received}) == 200
    assert len(await published(db, tenant, catalogue.RECIPIENTS_SELECTED)) == 200
    assert len(await published(db, tenant, catalogue.DELIVERY_ACKNOWLEDGED)) == 400


async def test_a_lost_acknowledgement_is_asked_again_under_the_same_id(
    client: httpx.AsyncClient,
    public: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
) -> None:
    hook = receivers.add("slow")
    created = await register(client, "slow", hook.url)
    hook.secret = created["signing_secret"]
    hook.behaviour = ok(202)  # takes it, never acknowledges in the answer
    settings = notifier_settings.model_copy(update={"ack_resend_seconds": 0.3})
    async with notifier(settings):
        await produce(settings.kafka_bootstrap_servers, [erasure_requested(tenant)])
        await eventually(lambda: _wait_received(hook), lambda n: n >= 3)
        notice = hook.received[0].json
        raw, headers = sign_ack(
            hook.secret, {"delivery_id": notice["delivery_id"], "recipient_id": created["id"]}
        )
        acked = await public.post("/v1/acknowledgements", content=raw, headers=headers)
        assert acked.status_code == 200, acked.text
        seen = len(hook.received)
        # No more notices once acknowledged (an attempt in flight may still land).
        await eventually(lambda: _wait_received(hook), lambda n: n >= seen, seconds=1)
    assert len(hook.received) <= seen + 1
    assert {r.headers["webhook-id"] for r in hook.received} == {notice["webhook_id"]}
    assert len({r.body for r in hook.received}) == 1
    assert hook.verified == hook.received
    row = await db.fetchrow("SELECT * FROM deliveries WHERE tenant_id = $1", tenant)
    assert row is not None
    assert row["status"] == "acknowledged"
    assert row["acknowledged_via"] == "callback"
    assert row["next_attempt_at"] is None


async def test_delivered_but_never_acknowledged_is_dead_lettered(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
) -> None:
    hook = receivers.add("silent")
    hook.secret = (await register(client, "silent", hook.url))["signing_secret"]
    settings = notifier_settings.model_copy(
        update={"ack_resend_seconds": 0.3, "retry_window_seconds": 1.0}
    )
    async with notifier(settings):
        await produce(settings.kafka_bootstrap_servers, [erasure_requested(tenant)])
        row = await eventually(
            lambda: db.fetchrow("SELECT * FROM deliveries WHERE tenant_id = $1", tenant),
            lambda r: r is not None and r["status"] == "dead_lettered",
        )
    assert row is not None
    assert row["last_error"] == "not-acknowledged"
    assert row["delivered_at"] is not None
    assert row["flagged_at"] is not None
    events = await published(db, tenant, catalogue.DELIVERY_DEAD_LETTERED)
    assert [e.message.last_error for e in events] == ["not-acknowledged"]  # type: ignore[attr-defined]


async def test_rotation_signs_with_both_secrets_during_the_grace_period(
    client: httpx.AsyncClient,
    public: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
) -> None:
    hook = receivers.add("rotating")
    created = await register(client, "rotating", hook.url)
    old_secret = created["signing_secret"]
    rotated = await client.post(f"/v1/recipients/{created['id']}/rotate-secret")
    new_secret = rotated.json()["signing_secret"]
    hook.secret = new_secret
    async with notifier(notifier_settings):
        await produce(notifier_settings.kafka_bootstrap_servers, [erasure_requested(tenant)])
        await eventually(lambda: _wait_received(hook), lambda n: n >= 1)
    notice = hook.received[0]
    assert len(notice.headers["webhook-signature"].split(" ")) == 2
    Webhook(old_secret).verify(notice.body, notice.headers)  # a recipient not yet switched over
    Webhook(new_secret).verify(notice.body, notice.headers)
    # An acknowledgement signed with the old secret is still accepted in the grace period.
    raw, headers = sign_ack(
        old_secret, {"webhook_id": notice.json["webhook_id"], "recipient_id": created["id"]}
    )
    assert (
        await public.post("/v1/acknowledgements", content=raw, headers=headers)
    ).status_code == 200


async def test_reports_are_per_tenant(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
    keyed_client: KeyedClient,
) -> None:
    hook = receivers.add("pay")
    hook.secret = (await register(client, "pay", hook.url))["signing_secret"]
    async with notifier(notifier_settings):
        await produce(
            notifier_settings.kafka_bootstrap_servers,
            [erasure_requested(tenant, request_id="req-mine")],
        )
        await eventually(lambda: _wait_received(hook), lambda n: n >= 1)
    delivery_id = hook.received[0].json["delivery_id"]
    assert (await client.get(f"/v1/deliveries/{delivery_id}")).status_code == 200
    other = await keyed_client(uuid.uuid4(), ["subprocessors:read"])
    for path in (
        f"/v1/deliveries/{delivery_id}",
        "/v1/requests/req-mine/recipients",
    ):
        assert (await other.get(path)).status_code == 404, path
    assert (await other.get("/v1/deliveries")).json()["deliveries"] == []
    # Paging through the tenant's own deliveries.
    page = (await client.get("/v1/deliveries", params={"limit": 1})).json()
    assert [d["id"] for d in page["deliveries"]] == [delivery_id]
    assert page["next_after"] is None


def _slow(seconds: float, then: Behaviour) -> Behaviour:
    """Answer like `then`, after `seconds`."""

    def answer(n: int, message_id: str, body: bytes) -> Response:
        time.sleep(seconds)
        return then(n, message_id, body)

    return answer


async def test_a_recipient_that_times_out_then_answers_slowly_is_told_once(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
) -> None:
    # The first answer comes after the attempt's timeout (the sender gives up and retries);
    # the second is slow but inside it and acknowledges: one delivery, one acknowledgement,
    # one webhook-id, whatever the recipient saw.
    settings = notifier_settings.model_copy(update={"webhook_timeout_seconds": 1.0})
    hook = receivers.add("slow")
    hook.secret = (await register(client, "slow", hook.url))["signing_secret"]
    acknowledge = signed_ack(hook.secret)
    too_slow, slow_enough = _slow(2.5, acknowledge), _slow(0.4, acknowledge)
    hook.behaviour = lambda n, message_id, body: (too_slow if n == 1 else slow_enough)(
        n, message_id, body
    )
    timeouts = metrics.REGISTRY.get_sample_value(
        "consentry_webhook_deliveries_total", {"outcome": "retry_scheduled", "reason": "timeout"}
    )
    async with notifier(settings):
        await produce(
            settings.kafka_bootstrap_servers, [erasure_requested(tenant, request_id="req-slow")]
        )
        rows = await eventually(
            lambda: db.fetch("SELECT * FROM deliveries WHERE tenant_id = $1", tenant),
            lambda rows: len(rows) == 1 and rows[0]["status"] == "acknowledged",
        )
    (row,) = rows
    assert row["attempts"] == 2
    assert row["acknowledged_via"] == "response"
    assert len(hook.received) == 2
    assert {r.headers["webhook-id"] for r in hook.received} == {"msg_" + row["id"].hex}
    assert len(await published(db, tenant, catalogue.DELIVERY_ACKNOWLEDGED)) == 1
    after = metrics.REGISTRY.get_sample_value(
        "consentry_webhook_deliveries_total", {"outcome": "retry_scheduled", "reason": "timeout"}
    )
    assert (after or 0) - (timeouts or 0) >= 1
