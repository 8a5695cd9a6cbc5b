"""The directory follower (ADR 0008): tenants and API keys from the tenant topic, through the
real broker into the real database, as the application's role (RLS applies)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from consentry.eventing import catalogue, topics
from consentry.eventing.directory import pseudonymise
from consentry.eventing.replica import TOMBSTONE_HASH
from consentry.eventing.sealing import Sealer
from consentry.eventing.testing import Record, collect, header, produce, running
from consentry.eventing.testing import api_key_issued as issued
from consentry.eventing.testing import api_key_revoked as revoked
from consentry.eventing.testing import new_api_key as new_key
from consentry.eventing.testing import tenant_provisioned as provisioned
from consentry.httpapi.keys import DbKeyResolver
from consentry.preferences.directory.follower import run_directory
from consentry.preferences.settings import DirectorySettings
from consentry.preferences.tenants import load_keys

pytestmark = pytest.mark.integration


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Poll `check` until it is true (the follower applies asynchronously)."""
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.05)


def follower(settings: DirectorySettings) -> contextlib.AbstractAsyncContextManager[None]:
    """The follower in this process while the block runs (its crash fails the test)."""
    return running(run_directory, settings)


@pytest.fixture
def settings(app_dsn: str, kafka_bootstrap: str) -> DirectorySettings:
    """The follower as in production: the application's role, a group of its own."""
    return DirectorySettings(
        database_url=app_dsn,
        kafka_bootstrap_servers=kafka_bootstrap,
        environment="test",
        directory_group_id=f"pd-{uuid.uuid4().hex[:10]}",
    )


async def fetch_tenant(db: asyncpg.Connection, tenant_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant_id)


async def fetch_key(db: asyncpg.Connection, key_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)


async def test_tenants_and_keys_arrive_and_work_like_in_the_consent_service(
    settings: DirectorySettings,
    kafka_bootstrap: str,
    db: asyncpg.Connection,
    app_dsn: str,
    sealer: Sealer,
) -> None:
    tenant_id, subject_key = uuid.uuid4(), secrets.token_bytes(32)
    (reader_id, reader), (old_id, old) = new_key(), new_key()
    at = datetime(2026, 11, 2, 8, tzinfo=UTC)
    first_issue = issued(tenant_id, reader, ["preferences:read", "lists:read"], at=at)
    await produce(
        kafka_bootstrap,
        [
            provisioned(tenant_id, subject_key),
            first_issue,
            issued(tenant_id, old, ["admin"], at=at),
            revoked(tenant_id, old_id, at=at + timedelta(hours=1)),
            first_issue,  # the same event again (same id): applied once
        ],
    )
    async with follower(settings):
        await eventually(lambda: _revoked(db, old_id))
        tenant = await fetch_tenant(db, tenant_id)
        assert tenant is not None
        assert tenant["name"] == "Acme Learning AB"
        assert tenant["provisioned_at"] == datetime(2026, 11, 1, tzinfo=UTC)
        # The subject key, sealed under this service's master key: the same refs as consent.
        async with db.transaction():
            keys = await load_keys(db, sealer, tenant_id)
        assert keys is not None
        assert keys.subject_key == subject_key
        assert keys.subject_ref("Anna@Example.se") == pseudonymise(subject_key, "anna@example.se")
        assert len({keys.subject_key, keys.kek, keys.link_key}) == 3  # its own KEK and link key
        sealed_columns = ("subject_key_sealed", "kek_sealed", "link_key_sealed")
        assert all(subject_key not in tenant[column] for column in sealed_columns)

        # Announced again (publish-directory: new event ids), renamed: the KEK and the link
        # key stay, the name changes, nothing else.
        reissued = issued(tenant_id, reader, ["preferences:read", "lists:read"], at=at)
        await produce(
            kafka_bootstrap, [provisioned(tenant_id, subject_key, name="Acme AB"), reissued]
        )
        await eventually(lambda: _named(db, tenant_id, "Acme AB"))
    again = await fetch_tenant(db, tenant_id)
    assert again is not None
    for column in ("subject_key_sealed", "kek_sealed", "link_key_sealed", "provisioned_at"):
        assert again[column] == tenant[column], column
    assert await db.fetchval("SELECT count(*) FROM tenants WHERE id = $1", tenant_id) == 1

    # The keys resolve here as they do in the consent service (the shared resolver).
    pool = await asyncpg.create_pool(app_dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        resolver = DbKeyResolver(pool, cache_seconds=0)
        principal = await resolver.resolve(reader)
        assert principal is not None
        assert principal.tenant_id == tenant_id
        assert principal.scopes == {"preferences:read", "lists:read"}
        assert principal.key_id == reader_id
        assert await resolver.resolve(old) is None  # revoked
        assert await resolver.resolve(reader[:-4] + "AAAA") is None  # a wrong secret
    finally:
        await pool.close()
    row = await fetch_key(db, reader_id)
    assert row is not None
    assert row["issued_at"] == at
    assert row["revoked_at"] is None
    assert (
        await db.fetchval(
            "SELECT count(*) FROM eventing_inbox WHERE consumer = $1 AND event_id = $2",
            settings.directory_group_id,
            first_issue.id,
        )
        == 1
    )


async def _revoked(db: asyncpg.Connection, key_id: str) -> bool:
    row = await fetch_key(db, key_id)
    return row is not None and row["revoked_at"] is not None


async def _named(db: asyncpg.Connection, tenant_id: uuid.UUID, name: str) -> bool:
    row = await fetch_tenant(db, tenant_id)
    return row is not None and row["name"] == name


async def test_a_revocation_is_final_whatever_arrives_after_it(
    settings: DirectorySettings, kafka_bootstrap: str, db: asyncpg.Connection, app_dsn: str
) -> None:
    """publish-directory re-announces a key (`issued`) that may land after its revocation;
    a revocation may also be all this replica ever saw of a key."""
    tenant_id = uuid.uuid4()
    (late_id, late), (only_id, _) = new_key(), new_key()
    at = datetime(2026, 11, 3, 9, tzinfo=UTC)
    marker_id, marker = new_key()
    await produce(
        kafka_bootstrap,
        [
            issued(tenant_id, late, ["admin"], at=at),
            revoked(tenant_id, late_id, at=at + timedelta(minutes=5)),
            issued(tenant_id, late, ["admin"], at=at),  # re-announced after the revocation
            revoked(tenant_id, late_id, at=at + timedelta(minutes=9)),  # later: keeps the first
            revoked(tenant_id, only_id, at=at),  # never issued here: a tombstone
            issued(tenant_id, marker, ["lists:read"], at=at),  # the last one: all applied
        ],
    )
    async with follower(settings):
        await eventually(lambda: _exists(db, marker_id))
    late_row = await fetch_key(db, late_id)
    assert late_row is not None
    assert late_row["revoked_at"] == at + timedelta(minutes=5)
    assert late_row["scopes"] == ["admin"]
    tombstone = await fetch_key(db, only_id)
    assert tombstone is not None
    assert tombstone["tenant_id"] == tenant_id
    assert tombstone["revoked_at"] == at
    assert tombstone["scopes"] == []
    assert tombstone["secret_hash"] == TOMBSTONE_HASH

    # The tombstone filled in by a late `issued` stays revoked too.
    only_key = f"csk_{only_id}_{secrets.token_urlsafe(32)}"
    marker_two_id, marker_two = new_key()
    await produce(
        kafka_bootstrap,
        [issued(tenant_id, only_key, ["admin"], at=at), issued(tenant_id, marker_two, [], at=at)],
    )
    async with follower(settings):
        await eventually(lambda: _exists(db, marker_two_id))
    filled = await fetch_key(db, only_id)
    assert filled is not None
    assert filled["scopes"] == ["admin"]
    assert filled["revoked_at"] == at
    pool = await asyncpg.create_pool(app_dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        resolver = DbKeyResolver(pool, cache_seconds=0)
        assert await resolver.resolve(late) is None
        assert await resolver.resolve(only_key) is None
        assert await resolver.resolve(marker) is not None
    finally:
        await pool.close()


async def _exists(db: asyncpg.Connection, key_id: str) -> bool:
    return await fetch_key(db, key_id) is not None


async def test_poison_is_dead_lettered_and_the_follower_keeps_going(
    settings: DirectorySettings, kafka_bootstrap: str, db: asyncpg.Connection, sealer: Sealer
) -> None:
    mine, other, fake = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    subject_key = secrets.token_bytes(32)
    foreign_id, foreign = new_key()
    last_id, last = new_key()
    at = datetime(2026, 11, 4, tzinfo=UTC)
    wrong_directory_key = Sealer(secrets.token_bytes(32))
    # `other`'s key first, and applied, before `mine` claims it: the two tenants' events travel
    # on different partitions, in no order relative to each other.
    await produce(
        kafka_bootstrap, [provisioned(mine, subject_key), issued(other, foreign, ["admin"], at=at)]
    )

    def ours(record: Record) -> bool:
        return (record.key or b"").split(b"/")[0].decode() in {str(mine), str(fake)}

    async with follower(settings):
        await eventually(lambda: _exists(db, foreign_id))
        await produce(
            kafka_bootstrap,
            [
                # Wrapped under another directory key: does not open.
                provisioned(fake, subject_key, wrapper=wrong_directory_key),
                # Another tenant's wrapped key copied into this tenant's event: does not open.
                provisioned(fake, subject_key, context_of=other),
                # The key id belongs to `other`: refused for `mine`, issued or revoked.
                issued(mine, foreign, ["admin"], at=at),
                revoked(mine, foreign_id, at=at),
                # The same tenant, a different subject key: an operator must decide.
                provisioned(mine, secrets.token_bytes(32), name="Changed"),
                issued(mine, last, ["admin"], at=at),  # after all that: still applied
            ],
        )
        async with AIOKafkaProducer(bootstrap_servers=kafka_bootstrap) as producer:
            await producer.send_and_wait(  # not a CloudEvent at all
                topics.TENANT,
                b"\x00garbage",
                key=f"{mine}/tenant".encode(),
                headers=[("ce_type", catalogue.TENANT_PROVISIONED.name.encode())],
            )
        dead = await collect(
            kafka_bootstrap,
            topics.dead_letter_topic(settings.directory_group_id),
            lambda kept: len(kept) >= 6,
            keep=ours,
            seconds=40,
        )
        await eventually(lambda: _exists(db, last_id))
    reasons = sorted(header(record, "dlq.reason") for record in dead)
    assert reasons == sorted(
        [
            "subject-key-unwrap-failed",
            "subject-key-unwrap-failed",
            "api-key-tenant-mismatch",
            "api-key-tenant-mismatch",
            "subject-key-conflict",
            "missing-headers",
        ]
    )
    assert {header(record, "dlq.consumer") for record in dead} == {settings.directory_group_id}
    assert await fetch_tenant(db, fake) is None
    tenant = await fetch_tenant(db, mine)
    assert tenant is not None
    assert tenant["name"] == "Acme Learning AB"  # the conflicting announcement changed nothing
    async with db.transaction():
        keys = await load_keys(db, sealer, mine)
    assert keys is not None
    assert keys.subject_key == subject_key
    foreign_row = await fetch_key(db, foreign_id)
    assert foreign_row is not None
    assert foreign_row["tenant_id"] == other
    assert foreign_row["revoked_at"] is None
