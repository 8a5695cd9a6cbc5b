"""End to end through real processes and the real broker: HTTP → outbox → relay → Kafka →
audit appender → hash chain, with poison messages, a killed relay and tampering."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import secrets
import uuid
from collections import defaultdict

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry.audit.follower import ChainFollower, follow, keys_from_url
from consentry.audit.v1 import audit_pb2
from consentry.consent.v1 import consent_pb2
from consentry.devstack.services import DEV_TENANT_ID
from consentry.devstack.stack import DevStack
from consentry.devstack.testing_workers import Worker
from consentry.eventing import topics
from consentry.eventing.testing import collect, header

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# Each subject's script of decisions: (purpose, status).
SCRIPT = [
    ("performance", "given"),
    ("targeting", "given"),
    ("performance", "withdrawn"),
    ("functionality", "given"),
    ("targeting", "withdrawn"),
]


async def decide(
    api: httpx.AsyncClient, subject: str, purpose: str, status: str
) -> dict[str, object]:
    response = await api.put(
        f"/v1/subjects/{subject}/consents/{purpose}",
        json={"status": status, "policy_version": "2026-11"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def subject_ref(api: httpx.AsyncClient, subject: str) -> str:
    response = await api.get(f"/v1/subjects/{subject}/consents")
    assert response.status_code == 200, response.text
    return str(response.json()["subject_ref"])


async def audit_entries(api: httpx.AsyncClient) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    after = 0
    while True:
        page = (
            await api.get("/v1/audit/entries", params={"after_seq": after, "limit": 1000})
        ).json()
        entries.extend(page["entries"])
        if page["next_after_seq"] is None:
            return entries
        after = page["next_after_seq"]


async def wait_for_entries(
    api: httpx.AsyncClient, refs: set[str], count: int, seconds: float = 90
) -> list[dict[str, object]]:
    """Poll the audit API until it holds `count` entries of the subjects `refs`."""
    async with asyncio.timeout(seconds):
        while True:
            entries = [e for e in await audit_entries(api) if e["subject_ref"] in refs]
            if len(entries) >= count:
                return entries
            await asyncio.sleep(0.2)


def decision_of(entry: dict[str, object]) -> tuple[str, int]:
    """(event type, subject version) from an entry's stored bytes alone."""
    stored = audit_pb2.AuditEntry.FromString(base64.b64decode(str(entry["entry"])))
    message = (
        consent_pb2.ConsentGiven
        if stored.event_type.endswith("given.v1")
        else consent_pb2.ConsentWithdrawn
    ).FromString(stored.data)
    return stored.event_type, message.decision.subject_version


async def test_consents_reach_the_audit_chain_in_per_subject_order(
    relay: Worker, consent_api: httpx.AsyncClient, audit_api: httpx.AsyncClient, stack: DevStack
) -> None:
    subjects = [f"person-{secrets.token_hex(3)}@example.com" for _ in range(6)]

    async def play(subject: str) -> None:
        for purpose, status in SCRIPT:
            await decide(consent_api, subject, purpose, status)

    await asyncio.gather(*(play(subject) for subject in subjects))
    refs = {await subject_ref(consent_api, subject): subject for subject in subjects}
    entries = await wait_for_entries(audit_api, set(refs), len(subjects) * len(SCRIPT))

    assert len(entries) == len(subjects) * len(SCRIPT)
    assert len({e["event_id"] for e in entries}) == len(entries)
    per_subject: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for entry in entries:  # chain order
        per_subject[str(entry["subject_ref"])].append(decision_of(entry))
    expected = [
        (f"consentry.consent.{status}.v1", version)
        for version, (_, status) in enumerate(SCRIPT, start=1)
    ]
    assert all(history == expected for history in per_subject.values()), per_subject

    report = (await audit_api.get("/v1/audit/verify")).json()
    assert report["ok"] is True, report
    assert report["tenant_id"] == DEV_TENANT_ID

    # No raw identifier in the audit log or on the topic.
    async with asyncio.timeout(10):
        conn = await asyncpg.connect(stack.database_dsn("audit"))
    try:
        blobs = b"".join(
            row["entry"] for row in await conn.fetch("SELECT entry FROM audit_entries")
        )
        # The appender and the API are logged in with the append-only role, not as the owner.
        users = await conn.fetch(
            "SELECT DISTINCT usename FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert {row["usename"] for row in users} == {"consentry_audit_app"}
    finally:
        await conn.close()
    records = await collect(
        stack.bootstrap,
        topics.CONSENT,
        lambda kept: len(kept) >= len(entries),
        keep=lambda r: header(r, "ce_subject") in refs,
    )
    on_topic = b"".join(r.value or b"" for r in records) + b"".join(r.key or b"" for r in records)
    for subject in subjects:
        assert subject.encode() not in blobs
        assert subject.encode() not in on_topic


async def test_poison_is_dead_lettered_and_the_appender_keeps_going(
    relay: Worker, consent_api: httpx.AsyncClient, audit_api: httpx.AsyncClient, stack: DevStack
) -> None:
    poison_key = f"poison-{uuid.uuid4().hex}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.CONSENT, b"\x08\x96\x01 definitely not an event", poison_key
        )
        await producer.send_and_wait(
            topics.CONSENT,
            b"\xff\xff",
            poison_key,
            headers=[
                ("ce_id", b"x"),
                ("ce_type", b"consentry.consent.given.v1"),
                ("ce_source", b"/evil"),
                ("ce_specversion", b"1.0"),
                ("ce_tenant", b"t"),
                ("ce_subject", b"s"),
                ("content-type", b"application/protobuf"),
            ],
        )
    finally:
        await producer.stop()

    subject = f"after-poison-{secrets.token_hex(3)}"
    await decide(consent_api, subject, "performance", "given")
    ref = await subject_ref(consent_api, subject)
    (entry,) = await wait_for_entries(audit_api, {ref}, 1)
    assert decision_of(entry) == ("consentry.consent.given.v1", 1)

    dead = await collect(
        stack.bootstrap,
        topics.dead_letter_topic("audit-appender"),
        lambda kept: len(kept) >= 2,
        keep=lambda r: r.key == poison_key,
    )
    assert sorted(header(r, "dlq.reason") for r in dead) == ["invalid-tenant", "missing-headers"]
    assert all(header(r, "dlq.topic") == topics.CONSENT for r in dead)


async def test_relay_killed_mid_stream_loses_nothing_and_duplicates_nothing(
    relay: Worker, consent_api: httpx.AsyncClient, audit_api: httpx.AsyncClient, stack: DevStack
) -> None:
    subjects = [f"kill-{secrets.token_hex(3)}" for _ in range(20)]
    purposes = [f"purpose-{n}" for n in range(15)]
    accepted = 0

    async def write(subject: str) -> None:
        nonlocal accepted
        for purpose in purposes:
            await decide(consent_api, subject, purpose, "given")
            accepted += 1

    writers = asyncio.gather(*(write(subject) for subject in subjects))
    conn = await asyncpg.connect(stack.database_dsn("consent"))
    try:
        async with asyncio.timeout(30):  # kill once some, but not all, rows are published
            while (
                await conn.fetchval(
                    "SELECT count(*) FROM eventing_outbox WHERE published_at IS NOT NULL"
                )
                < 150
            ):
                await asyncio.sleep(0.01)
        assert await relay.kill() == -9
        await writers
        unpublished = await conn.fetchval(
            "SELECT count(*) FROM eventing_outbox WHERE published_at IS NULL"
        )
        assert unpublished > 0  # the kill left work behind
        await relay.start()
    finally:
        await conn.close()

    refs = {await subject_ref(consent_api, subject) for subject in subjects}
    entries = await wait_for_entries(audit_api, refs, accepted, seconds=60)
    await asyncio.sleep(1.0)  # anything duplicated would arrive now
    entries = [e for e in await audit_entries(audit_api) if e["subject_ref"] in refs]
    assert accepted == len(subjects) * len(purposes)
    assert len(entries) == accepted
    assert len({e["event_id"] for e in entries}) == accepted
    per_subject: dict[str, list[int]] = defaultdict(list)
    for entry in entries:
        per_subject[str(entry["subject_ref"])].append(decision_of(entry)[1])
    assert all(versions == list(range(1, len(purposes) + 1)) for versions in per_subject.values())
    assert (await audit_api.get("/v1/audit/verify")).json()["ok"] is True


async def test_tampering_with_one_entry_is_reported_at_that_entry(
    relay: Worker, consent_api: httpx.AsyncClient, audit_api: httpx.AsyncClient, stack: DevStack
) -> None:
    subject = f"tamper-{secrets.token_hex(3)}"
    await decide(consent_api, subject, "performance", "given")
    ref = await subject_ref(consent_api, subject)
    (entry,) = await wait_for_entries(audit_api, {ref}, 1)
    seq = entry["seq"]
    conn = await asyncpg.connect(stack.database_dsn("audit"))
    try:
        # seq counts per tenant: name the dev tenant's entry (other tenants may have a chain)
        tenant = uuid.UUID(DEV_TENANT_ID)
        original = await conn.fetchval(
            "SELECT entry FROM audit_entries WHERE tenant_id = $1 AND seq = $2", tenant, seq
        )

        async def overwrite(value: bytes) -> None:
            async with conn.transaction():  # only the database owner can bypass the triggers
                await conn.execute(
                    "ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_no_update_delete"
                )
                await conn.execute(
                    "UPDATE audit_entries SET entry = $1 WHERE tenant_id = $2 AND seq = $3",
                    value,
                    tenant,
                    seq,
                )
                await conn.execute(
                    "ALTER TABLE audit_entries ENABLE ALWAYS TRIGGER audit_entries_no_update_delete"
                )

        await overwrite(original.replace(b"performance", b"functionaly"))
        report = (await audit_api.get("/v1/audit/verify")).json()
        assert report["ok"] is False
        assert report["broken"]["seq"] == seq
        assert report["broken"]["event_id"] == entry["event_id"]
        await overwrite(original)
        assert (await audit_api.get("/v1/audit/verify")).json()["ok"] is True
    finally:
        await conn.close()


async def test_the_appender_signs_checkpoints_that_verify_with_the_published_keys(
    relay: Worker, consent_api: httpx.AsyncClient, audit_api: httpx.AsyncClient
) -> None:
    subject = f"checkpoint-{secrets.token_hex(3)}"
    await decide(consent_api, subject, "performance", "given")
    ref = await subject_ref(consent_api, subject)
    (entry,) = await wait_for_entries(audit_api, {ref}, 1)
    async with asyncio.timeout(60):  # a checkpoint at least every 0.5 s while the tree grows
        while True:
            response = await audit_api.get("/v1/audit/checkpoints/latest")
            if response.status_code == 200 and response.json()["tree_size"] >= entry["seq"]:
                break
            await asyncio.sleep(0.2)
    latest = response.json()
    jwks = (await audit_api.get("/v1/audit/keys", headers={"Authorization": ""})).json()
    (key,) = [k for k in jwks["keys"] if k["kid"] == latest["key_id"]]
    body = (
        f"consentry.audit/{latest['tenant_id']}\n{latest['tree_size']}\n"
        f"{base64.b64encode(bytes.fromhex(latest['root_hash'])).decode()}\n{latest['timestamp']}\n"
    ).encode()
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=="))
    public.verify(base64.urlsafe_b64decode(latest["signature"] + "=="), body)


async def test_the_audit_topic_follower_verifies_the_live_chain(
    relay: Worker, consent_api: httpx.AsyncClient, audit_api: httpx.AsyncClient, stack: DevStack
) -> None:
    subject = f"follower-{secrets.token_hex(3)}"
    await decide(consent_api, subject, "performance", "given")
    ref = await subject_ref(consent_api, subject)
    (entry,) = await wait_for_entries(audit_api, {ref}, 1)
    seq = int(str(entry["seq"]))

    follower = ChainFollower(keys_from_url(f"{stack.api_url('audit')}/v1/audit/keys"))
    out = io.StringIO()
    task = asyncio.create_task(
        follow(stack.bootstrap, follower, f"follower-{uuid.uuid4().hex[:8]}", out)
    )
    try:
        async with asyncio.timeout(60):  # until a checkpoint covering our entry has verified
            while not any(
                int(line.split("tree size ")[1].split(":")[0]) >= seq
                for line in out.getvalue().splitlines()
                if DEV_TENANT_ID in line
            ):
                assert not task.done(), task.exception()
                await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert all(line.startswith("OK tenant ") for line in out.getvalue().splitlines())


async def test_appender_killed_mid_stream_leaves_no_gap_and_no_duplicate(
    relay: Worker,
    appender: Worker,
    consent_api: httpx.AsyncClient,
    audit_api: httpx.AsyncClient,
    stack: DevStack,
) -> None:
    subjects = [f"appender-kill-{secrets.token_hex(3)}" for _ in range(20)]
    purposes = [f"purpose-{n}" for n in range(15)]
    before = (await audit_api.get("/v1/audit/verify")).json()["entries"]

    async def write(subject: str) -> None:
        for purpose in purposes:
            await decide(consent_api, subject, purpose, "given")

    writers = asyncio.gather(*(write(subject) for subject in subjects))
    async with asyncio.timeout(60):  # kill once the chain has grown, but not by everything
        while (await audit_api.get("/v1/audit/verify")).json()["entries"] < before + 100:
            await asyncio.sleep(0.02)
    assert await appender.kill() == -9
    await writers
    grown = (await audit_api.get("/v1/audit/verify")).json()["entries"] - before
    assert grown < len(subjects) * len(purposes)  # the kill left work behind
    await appender.start()

    refs = {await subject_ref(consent_api, subject) for subject in subjects}
    await wait_for_entries(audit_api, refs, len(subjects) * len(purposes), seconds=120)
    await asyncio.sleep(1.0)  # anything duplicated would arrive now
    entries = await audit_entries(audit_api)
    assert [int(str(e["seq"])) for e in entries] == list(range(1, len(entries) + 1))  # no gap
    mine = [e for e in entries if e["subject_ref"] in refs]
    assert len(mine) == len({e["event_id"] for e in mine}) == len(subjects) * len(purposes)
    report = (await audit_api.get("/v1/audit/verify")).json()
    assert report["ok"] is True
    assert report["entries"] == len(entries)
