"""The consent follower: this service's copy of consent state from the consent topic, through
the real broker into the real database, as the application's role (RLS applies)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp

from consentry.consent.v1 import consent_pb2, policy_pb2
from consentry.eventing import catalogue, topics
from consentry.eventing.db import set_tenant
from consentry.eventing.envelope import Event, encode
from consentry.eventing.testing import Record, collect, header
from consentry.preferences.consentcopy.follower import run_consent_follower
from consentry.preferences.consentcopy.repository import (
    consents_of,
    current_policy_version,
    marketing_consent,
)
from consentry.preferences.settings import ConsentFollowerSettings

pytestmark = pytest.mark.integration
SOURCE = "/consentry/consent"
MARKETING = "marketing-email"
T0 = datetime(2026, 11, 10, 8, tzinfo=UTC)


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def ref() -> str:
    return secrets.token_hex(32)


def decision(
    tenant_id: uuid.UUID,
    subject_ref: str,
    version: int,
    *,
    given: bool,
    purpose: str = MARKETING,
    policy_version: str = "2026-01",
) -> Event:
    """A consent.given / consent.withdrawn event as the consent service publishes it."""
    facts = consent_pb2.ConsentDecision(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        purpose=purpose,
        policy_version=policy_version,
        occurred_at=stamp(T0 + timedelta(minutes=min(version, 10_000))),
        subject_version=version,
        method=consent_pb2.CONSENT_METHOD_API,
    )
    if given:
        return Event(
            catalogue.CONSENT_GIVEN,
            str(tenant_id),
            subject_ref,
            consent_pb2.ConsentGiven(decision=facts),
            SOURCE,
        )
    return Event(
        catalogue.CONSENT_WITHDRAWN,
        str(tenant_id),
        subject_ref,
        consent_pb2.ConsentWithdrawn(decision=facts),
        SOURCE,
    )


def policy(tenant_id: uuid.UUID, version: str, effective_at: datetime, *, effective: bool) -> Event:
    """A policy_published or policy_effective event."""
    facts = policy_pb2.PolicyVersion(
        tenant_id=str(tenant_id),
        version=version,
        url=f"https://example.com/privacy/{version}",
        published_at=stamp(effective_at - timedelta(days=45)),
        effective_on=effective_at.date().isoformat(),
        effective_at=stamp(effective_at),
    )
    if effective:
        return Event(
            catalogue.POLICY_EFFECTIVE,
            str(tenant_id),
            catalogue.POLICY_SUBJECT,
            policy_pb2.PolicyEffective(policy=facts, activated_at=stamp(effective_at)),
            SOURCE,
        )
    return Event(
        catalogue.POLICY_PUBLISHED,
        str(tenant_id),
        catalogue.POLICY_SUBJECT,
        policy_pb2.PolicyPublished(policy=facts),
        SOURCE,
    )


def reconsent(tenant_id: uuid.UUID, subject_ref: str, version: int) -> Event:
    message = policy_pb2.ReconsentRequired(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        subject_version=version,
        purpose=MARKETING,
        previous_policy_version="2026-01",
        policy_version="2026-02",
        occurred_at=stamp(T0),
    )
    return Event(catalogue.CONSENT_RECONSENT_REQUIRED, str(tenant_id), subject_ref, message, SOURCE)


async def produce(bootstrap: str, events: Iterable[Event]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = []
        for item in events:
            record = encode(item)
            sent.append(
                await producer.send(
                    record.topic, record.value, key=record.key, headers=list(record.headers)
                )
            )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    """Poll `check` until it is true (the follower applies asynchronously)."""
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def follower(settings: ConsentFollowerSettings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_consent_follower(settings, stop))
    try:
        yield
    finally:
        stop.set()
        await task  # a crash of the follower fails the test here


@pytest.fixture
def settings(app_dsn: str, kafka_bootstrap: str) -> ConsentFollowerSettings:
    """The follower as in production: the application's role, a group of its own."""
    return ConsentFollowerSettings(
        database_url=app_dsn,
        kafka_bootstrap_servers=kafka_bootstrap,
        environment="test",
        consent_follower_group_id=f"pcf-{uuid.uuid4().hex[:10]}",
    )


@pytest.fixture
async def app_conn(app_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the application's role: reads see one tenant at a time."""
    conn = await asyncpg.connect(app_dsn)
    yield conn
    await conn.close()


async def copied(
    db: asyncpg.Connection, tenant_id: uuid.UUID
) -> dict[tuple[str, str], tuple[bool, int]]:
    rows = await db.fetch(
        "SELECT subject_ref, purpose, given, subject_version FROM consent_copy"
        " WHERE tenant_id = $1",
        tenant_id,
    )
    return {(r["subject_ref"], r["purpose"]): (r["given"], r["subject_version"]) for r in rows}


async def test_the_copy_follows_decisions_and_policies_and_ignores_stale_events(
    settings: ConsentFollowerSettings,
    kafka_bootstrap: str,
    db: asyncpg.Connection,
    app_conn: asyncpg.Connection,
) -> None:
    tenant, other = uuid.uuid4(), uuid.uuid4()
    anna, bo, marker = ref(), ref(), ref()
    bo_given = decision(tenant, bo, 1, given=True)
    await produce(
        kafka_bootstrap,
        [
            decision(tenant, anna, 1, given=True),
            decision(tenant, anna, 2, given=True, purpose="performance"),
            decision(tenant, anna, 4, given=False),  # withdrawn...
            decision(tenant, anna, 3, given=True),  # ...and an older `given` arriving late
            bo_given,
            bo_given,  # the same event again
            reconsent(tenant, bo, 2),  # not kept here: skipped
            policy(tenant, "2026-01", T0, effective=True),
            policy(tenant, "2026-03", T0 + timedelta(days=60), effective=False),  # published only
            policy(tenant, "2026-02", T0 + timedelta(days=40), effective=True),
            policy(tenant, "2026-01", T0, effective=True),  # announced again, out of date
            decision(other, anna, 1, given=True),  # the same ref in another tenant
            decision(tenant, marker, 1, given=True, purpose="marker"),
        ],
    )
    async with follower(settings):
        await eventually(lambda: _has(db, tenant, marker))
        # Stale again, after the newer decision was applied (another batch): still ignored.
        await produce(
            kafka_bootstrap,
            [
                decision(tenant, anna, 3, given=True),
                decision(tenant, marker, 2, given=False, purpose="marker"),
            ],
        )
        await eventually(lambda: _withdrawn(db, tenant, marker))

    assert await copied(db, tenant) == {
        (anna, MARKETING): (False, 4),
        (anna, "performance"): (True, 2),
        (bo, MARKETING): (True, 1),
        (marker, "marker"): (False, 2),
    }
    assert await copied(db, other) == {(anna, MARKETING): (True, 1)}
    row = await db.fetchrow(
        "SELECT policy_version, decided_at FROM consent_copy"
        " WHERE tenant_id = $1 AND subject_ref = $2 AND purpose = $3",
        tenant,
        anna,
        MARKETING,
    )
    assert row is not None
    assert (row["policy_version"], row["decided_at"]) == ("2026-01", T0 + timedelta(minutes=4))
    assert await db.fetchval(
        "SELECT effective_at FROM tenant_policy WHERE tenant_id = $1", tenant
    ) == T0 + timedelta(days=40)

    # The read API, as the application's role: one tenant at a time.
    async with app_conn.transaction():
        await set_tenant(app_conn, tenant)
        assert await marketing_consent(app_conn, tenant, anna) is False
        assert await marketing_consent(app_conn, tenant, bo) is True
        assert await marketing_consent(app_conn, tenant, ref()) is None  # never decided
        assert await consents_of(app_conn, tenant, anna) == {MARKETING: False, "performance": True}
        assert await consents_of(app_conn, tenant, ref()) == {}
        assert await current_policy_version(app_conn, tenant) == "2026-02"
        assert await current_policy_version(app_conn, other) is None  # RLS: not this scope
        assert await marketing_consent(app_conn, other, anna) is None
    async with app_conn.transaction():
        await set_tenant(app_conn, other)
        assert await marketing_consent(app_conn, other, anna) is True
        assert await current_policy_version(app_conn, other) is None  # none took effect
    # Each event id applied once: the duplicate was dropped by the inbox.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM eventing_inbox WHERE consumer = $1 AND event_id = $2",
            settings.consent_follower_group_id,
            bo_given.id,
        )
        == 1
    )


async def _has(db: asyncpg.Connection, tenant: uuid.UUID, subject_ref: str) -> bool:
    found: bool = await db.fetchval(
        "SELECT EXISTS (SELECT FROM consent_copy WHERE tenant_id = $1 AND subject_ref = $2)",
        tenant,
        subject_ref,
    )
    return found


async def _withdrawn(db: asyncpg.Connection, tenant: uuid.UUID, subject_ref: str) -> bool:
    given: bool | None = await db.fetchval(
        "SELECT given FROM consent_copy WHERE tenant_id = $1 AND subject_ref = $2",
        tenant,
        subject_ref,
    )
    return given is False


async def test_poison_is_dead_lettered_and_the_follower_keeps_going(
    settings: ConsentFollowerSettings, kafka_bootstrap: str, db: asyncpg.Connection
) -> None:
    tenant = uuid.uuid4()
    good, marker = ref(), ref()
    too_new = decision(tenant, good, 2**63, given=False)  # a uint64 that bigint cannot hold
    mismatched = decision(tenant, good, 5, given=False)
    mismatched.message.decision.tenant_id = str(uuid.uuid4())  # type: ignore[attr-defined]
    await produce(
        kafka_bootstrap,
        [
            decision(tenant, good, 1, given=True),
            too_new,
            mismatched,
            decision(tenant, good, 2, given=True, purpose="performance"),
            decision(tenant, marker, 1, given=True),
        ],
    )
    async with AIOKafkaProducer(bootstrap_servers=kafka_bootstrap) as producer:
        await producer.send_and_wait(
            topics.CONSENT,
            b"\xff\x00garbage",
            key=f"{tenant}/{good}".encode(),
            headers=[("ce_type", catalogue.CONSENT_GIVEN.name.encode())],
        )

    def ours(record: Record) -> bool:
        return (record.key or b"").startswith(str(tenant).encode())

    async with follower(settings):
        dead = await collect(
            kafka_bootstrap,
            topics.dead_letter_topic(settings.consent_follower_group_id),
            lambda kept: len(kept) >= 3,
            keep=ours,
            seconds=40,
        )
        await eventually(lambda: _has(db, tenant, marker))
    reasons = sorted(header(record, "dlq.reason") for record in dead)
    assert reasons == ["missing-headers", "schema-violation", "schema-violation"]
    details = {header(record, "dlq.detail") for record in dead}
    assert "subject_version is out of range" in details
    assert {header(record, "ce_id") for record in dead} >= {too_new.id, mismatched.id}
    # The good events of the same batch were applied; the poison changed nothing.
    assert await copied(db, tenant) == {
        (good, MARKETING): (True, 1),
        (good, "performance"): (True, 2),
        (marker, MARKETING): (True, 1),
    }


async def test_a_large_stream_is_applied_in_batches(
    settings: ConsentFollowerSettings, kafka_bootstrap: str, db: asyncpg.Connection
) -> None:
    """Thousands of decisions, several per subject and interleaved across tenants, with
    stale repeats: the newest decision of each subject wins. Prints the rate it applied at."""
    tenants = [uuid.uuid4() for _ in range(3)]
    subjects = {tenant: [ref() for _ in range(400)] for tenant in tenants}
    events: list[Event] = []
    for version in (1, 2, 3):
        for tenant in tenants:
            events += [
                decision(tenant, subject, version, given=version != 2)
                for subject in subjects[tenant]
            ]
    stale = [decision(t, s, 2, given=False) for t in tenants for s in subjects[t][:100]]
    events += stale  # late duplicates of version 2 (new ids): ignored
    await produce(kafka_bootstrap, events)

    async def all_final() -> bool:
        done: int = await db.fetchval(
            "SELECT count(*) FROM consent_copy WHERE tenant_id = ANY($1) AND subject_version = 3",
            tenants,
        )
        return done == 3 * 400

    async def claimed() -> int:
        count: int = await db.fetchval(
            "SELECT count(*) FROM eventing_inbox WHERE consumer = $1",
            settings.consent_follower_group_id,
        )
        return count

    started = time.perf_counter()
    async with follower(settings):
        await eventually(all_final, seconds=90)
        ours = len(events)
        await eventually(lambda: _at_least(claimed, ours), seconds=30)
        elapsed = time.perf_counter() - started
    print(f"consent follower: {await claimed()} events in {elapsed:.1f} s")
    for tenant in tenants:
        copy = await copied(db, tenant)
        assert copy == {(subject, MARKETING): (True, 3) for subject in subjects[tenant]}


async def _at_least(count: Callable[[], Awaitable[int]], wanted: int) -> bool:
    return await count() >= wanted
