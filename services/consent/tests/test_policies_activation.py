"""A version taking effect, against a real PostgreSQL as the application's (non-superuser) role:
only the changed purposes' consents are flagged, subject versions and events follow, the work
is chunked, resumable and idempotent, and the scheduler runs as its own process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import pytest_asyncio

from consentry.consent.__main__ import migrations
from consentry.consent.db import set_tenant
from consentry.consent.policies import service
from consentry.consent.policies.activation import activate_due_versions
from consentry.consent.policies.models import PolicyVersionIn
from consentry.consent.purposes.service import seed_default_purposes
from consentry.devstack.postgres import ensure_login_role, with_user
from consentry.eventing import catalogue
from consentry.eventing.db import Pool
from consentry.eventing.envelope import ReceivedEvent
from consentry.eventing.migrations import migrate_dsn
from consentry.eventing.testing import outbox_events

from .conftest import MakeTenant

pytestmark = pytest.mark.integration
STOCKHOLM = ZoneInfo("Europe/Stockholm")
V1 = {
    "required": "Cookies we need.",
    "performance": "We measure use.",
    "targeting": "We show ads.",
    "marketing-email": "We send offers.",
}
# v2 changes the notices of performance (consent) and required (legitimate interest).
V2 = {
    **V1,
    "performance": "We measure use and page speed.",
    "required": "Cookies we need, also for security.",
}
V2_EFFECTIVE = datetime(2026, 1, 14, tzinfo=STOCKHOLM)
AFTER_V2 = V2_EFFECTIVE + timedelta(minutes=1)


def ref(n: int) -> str:
    return f"{n:064x}"


@pytest_asyncio.fixture
async def pool(app_dsn: str) -> AsyncIterator[Pool]:
    """A pool logged in as the application's role (row-level security applies)."""
    created = await asyncpg.create_pool(app_dsn, min_size=1, max_size=4)
    assert created is not None
    yield created
    await created.close()


async def publish(
    pool: Pool,
    tenant: uuid.UUID,
    version: str,
    effective_on: date,
    now: datetime,
    notices: dict[str, str],
) -> None:
    body: dict[str, Any] = {
        "version": version,
        "url": f"https://example.com/{version}",
        "effective_on": effective_on.isoformat(),
        "purposes": [{"purpose": p, "notice": n} for p, n in notices.items()],
    }
    await service.publish_version(
        pool, tenant_id=tenant, version=PolicyVersionIn.model_validate(body), now=now
    )


async def publish_v1_v2(pool: Pool, tenant: uuid.UUID) -> None:
    await publish(pool, tenant, "v1", date(2025, 11, 1), datetime(2025, 11, 1, tzinfo=UTC), V1)
    await publish(
        pool, tenant, "v2", V2_EFFECTIVE.date(), datetime(2025, 11, 24, 9, tzinfo=UTC), V2
    )


async def decide(
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    subject_ref: str,
    purpose: str,
    policy_version: str,
    status: str = "given",
) -> None:
    """Record a decision the way the consent writer does: ledger, current state, version."""
    async with db.transaction():
        await set_tenant(db, tenant)
        version = await db.fetchval(
            "INSERT INTO subjects (tenant_id, subject_ref, version) VALUES ($1, $2, 1) "
            "ON CONFLICT (tenant_id, subject_ref) DO UPDATE SET version = subjects.version + 1 "
            "RETURNING version",
            tenant,
            subject_ref,
        )
        event_id = uuid.uuid4()
        await db.execute(
            "INSERT INTO consent_ledger (event_id, tenant_id, subject_ref, subject_version, "
            "purpose, status, policy_version, method, occurred_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, 'api', now())",
            event_id,
            tenant,
            subject_ref,
            version,
            purpose,
            status,
            policy_version,
        )
        await db.execute(
            "INSERT INTO consents (tenant_id, subject_ref, purpose, status, policy_version, "
            "method, occurred_at, subject_version, event_id) "
            "VALUES ($1, $2, $3, $4, $5, 'api', now(), $6, $7) "
            "ON CONFLICT (tenant_id, subject_ref, purpose) DO UPDATE SET status = $4, "
            "policy_version = $5, subject_version = $6, event_id = $7",
            tenant,
            subject_ref,
            purpose,
            status,
            policy_version,
            version,
            event_id,
        )


async def scoped_fetch(
    db: asyncpg.Connection, tenant: uuid.UUID, query: str, *args: object
) -> list[asyncpg.Record]:
    """Rows of `query` in the tenant's scope (works whether or not `db` bypasses RLS)."""
    async with db.transaction():
        await set_tenant(db, tenant)
        return list(await db.fetch(query, *args))


async def flags(db: asyncpg.Connection, tenant: uuid.UUID) -> dict[tuple[str, str], str | None]:
    rows = await scoped_fetch(
        db,
        tenant,
        "SELECT subject_ref, purpose, needs_reconsent, reconsent_policy_version FROM consents "
        "WHERE tenant_id = $1",
        tenant,
    )
    return {
        (r["subject_ref"], r["purpose"]): r["reconsent_policy_version"]
        for r in rows
        if r["needs_reconsent"]
    }


async def subject_versions(db: asyncpg.Connection, tenant: uuid.UUID) -> dict[str, int]:
    rows = await scoped_fetch(
        db, tenant, "SELECT subject_ref, version FROM subjects WHERE tenant_id = $1", tenant
    )
    return {r["subject_ref"]: r["version"] for r in rows}


def of_type(events: list[ReceivedEvent], event_type: catalogue.EventType) -> list[ReceivedEvent]:
    return [e for e in events if e.type is event_type]


async def test_only_the_changed_consent_purposes_are_flagged(
    pool: Pool, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = (await make_tenant("Acme")).tenant_id
    await publish_v1_v2(pool, tenant)
    for purpose in ("performance", "targeting", "required"):
        await decide(db, tenant, ref(1), purpose, "v1")
    await decide(db, tenant, ref(1), "marketing-email", "v1", status="withdrawn")
    await decide(db, tenant, ref(2), "performance", "v1")
    await decide(db, tenant, ref(3), "targeting", "v1")
    await decide(db, tenant, ref(4), "performance", "v2")  # already consented to the new notice
    await decide(db, tenant, ref(5), "performance", "legacy-0")  # a version never published
    await decide(db, tenant, ref(6), "performance", "v1", status="withdrawn")
    before = await subject_versions(db, tenant)

    # v1 (the baseline) is due from the start and flags nothing.
    assert await activate_due_versions(pool, now=datetime(2025, 12, 1, tzinfo=UTC)) == 1
    assert await flags(db, tenant) == {}
    # v2 is not due before its effective instant, nor during the grace after it that lets
    # decisions checked against v1 just before the instant commit.
    for moment in (V2_EFFECTIVE - timedelta(seconds=1), V2_EFFECTIVE + timedelta(seconds=10)):
        assert await activate_due_versions(pool, now=moment) == 0
    assert await flags(db, tenant) == {}

    at = V2_EFFECTIVE + timedelta(minutes=1)
    assert await activate_due_versions(pool, now=at) == 1
    flagged = {(ref(1), "performance"), (ref(2), "performance"), (ref(5), "performance")}
    assert await flags(db, tenant) == dict.fromkeys(flagged, "v2")
    after = await subject_versions(db, tenant)
    assert after == {
        subject: version + (1 if subject in {ref(1), ref(2), ref(5)} else 0)
        for subject, version in before.items()
    }

    events = await outbox_events(db)
    reconsent = of_type(events, catalogue.CONSENT_RECONSENT_REQUIRED)
    assert {(e.subject_ref, e.message.purpose) for e in reconsent} == flagged  # type: ignore[attr-defined]
    for event in reconsent:
        message: Any = event.message
        assert event.key == f"{tenant}/{event.subject_ref}".encode()
        assert message.subject_version == after[event.subject_ref]
        assert message.policy_version == "v2"
        assert message.occurred_at.ToDatetime(tzinfo=UTC) == V2_EFFECTIVE
    previous = {e.subject_ref: e.message.previous_policy_version for e in reconsent}  # type: ignore[attr-defined]
    assert previous == {ref(1): "v1", ref(2): "v1", ref(5): "legacy-0"}

    effective = of_type(events, catalogue.POLICY_EFFECTIVE)
    assert [e.message.policy.version for e in effective] == ["v1", "v2"]  # type: ignore[attr-defined]
    v2_event: Any = effective[1].message
    assert v2_event.reconsent_flagged == 3
    assert sorted(v2_event.policy.changed_purposes) == ["performance", "required"]
    assert effective[1].key == f"{tenant}/policy".encode()
    listed = await service.list_versions(pool, tenant_id=tenant, now=at)
    assert [(v.version, v.state, v.activated_at is not None) for v in listed.versions] == [
        ("v1", "superseded", True),
        ("v2", "effective", True),
    ]

    # Running again (or a second scheduler) changes nothing and publishes nothing.
    count = len(events)
    assert await activate_due_versions(pool, now=at + timedelta(days=1)) == 0
    assert len(await outbox_events(db)) == count
    assert await subject_versions(db, tenant) == after


async def test_activation_is_chunked_and_resumes_after_a_crash(
    pool: Pool, db: asyncpg.Connection, make_tenant: MakeTenant
) -> None:
    tenant = (await make_tenant("Acme")).tenant_id
    changed = {**V1, "performance": "New performance text.", "targeting": "New targeting text."}
    await publish(pool, tenant, "v1", date(2025, 11, 1), datetime(2025, 11, 1, tzinfo=UTC), V1)
    await publish(
        pool, tenant, "v2", V2_EFFECTIVE.date(), datetime(2025, 11, 24, tzinfo=UTC), changed
    )
    for n in range(5):
        for purpose in ("performance", "targeting"):
            await decide(db, tenant, ref(n), purpose, "v1")
    # A scheduler that died after committing its first chunk left subject 0 flagged, with its
    # version bumped and its events written.
    async with db.transaction():
        await set_tenant(db, tenant)
        await db.execute(
            "UPDATE consents SET needs_reconsent = true, reconsent_policy_version = 'v2' "
            "WHERE tenant_id = $1 AND subject_ref = $2",
            tenant,
            ref(0),
        )
        await db.execute(
            "UPDATE subjects SET version = version + 2 WHERE tenant_id = $1 AND subject_ref = $2",
            tenant,
            ref(0),
        )
    before = await subject_versions(db, tenant)

    assert await activate_due_versions(pool, now=AFTER_V2, batch_size=2) == 2
    assert len(await flags(db, tenant)) == 10
    reconsent = of_type(await outbox_events(db), catalogue.CONSENT_RECONSENT_REQUIRED)
    assert ref(0) not in {e.subject_ref for e in reconsent}
    after = await subject_versions(db, tenant)
    for n in range(1, 5):
        mine = [e.message for e in reconsent if e.subject_ref == ref(n)]
        # One version per event: each consumer that skips non-newer versions applies both.
        assert [m.subject_version for m in mine] == [before[ref(n)] + 1, before[ref(n)] + 2]  # type: ignore[attr-defined]
        assert sorted(m.purpose for m in mine) == ["performance", "targeting"]  # type: ignore[attr-defined]
        assert after[ref(n)] == before[ref(n)] + 2
    assert after[ref(0)] == before[ref(0)]
    # Four subjects at two per transaction: the flags were committed by two transactions.
    (xmins,) = await scoped_fetch(
        db,
        tenant,
        "SELECT count(DISTINCT xmin::text) FROM consents "
        "WHERE tenant_id = $1 AND subject_ref <> $2",
        tenant,
        ref(0),
    )
    assert xmins[0] == 2
    (effective,) = of_type(await outbox_events(db), catalogue.POLICY_EFFECTIVE)[-1:]
    assert effective.message.reconsent_flagged == 10  # type: ignore[attr-defined]


async def test_due_versions_are_found_across_tenants_but_read_only_per_tenant(
    pool: Pool, db: asyncpg.Connection, make_tenant: MakeTenant, app_conn: asyncpg.Connection
) -> None:
    a = (await make_tenant("A")).tenant_id
    b = (await make_tenant("B")).tenant_id
    await publish_v1_v2(pool, a)
    await publish(pool, b, "b1", date(2025, 11, 1), datetime(2025, 11, 1, tzinfo=UTC), V1)
    await decide(db, a, ref(1), "performance", "v1")
    await decide(db, b, ref(1), "performance", "v1")  # same ref, other tenant, a version "v1"

    # The application's role sees no tenant's versions without the tenant setting ...
    assert await app_conn.fetchval("SELECT count(*) FROM policy_versions") == 0
    # ... and the scheduler's function gives it only the due (tenant, version) pairs.
    due = await app_conn.fetch("SELECT * FROM consentry_due_policy_versions($1)", V2_EFFECTIVE)
    assert sorted((r["tenant_id"], r["version"]) for r in due) == sorted(
        [(a, "v1"), (a, "v2"), (b, "b1")]
    )
    assert due[-1]["version"] == "v2"  # oldest first: v2 takes effect last

    assert await activate_due_versions(pool, now=AFTER_V2) == 3
    assert await flags(db, a) == {(ref(1), "performance"): "v2"}
    assert await flags(db, b) == {}
    assert (
        await app_conn.fetch("SELECT * FROM consentry_due_policy_versions($1)", V2_EFFECTIVE) == []
    )


async def test_the_scheduler_process_activates_due_versions(
    pool: Pool, db: asyncpg.Connection, make_tenant: MakeTenant, app_dsn: str
) -> None:
    tenant = (await make_tenant("Acme")).tenant_id
    await publish_v1_v2(pool, tenant)  # both in the past by now
    await decide(db, tenant, ref(7), "performance", "v1")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consentry.consent",
        "policy-scheduler",
        env={
            **os.environ,
            "CONSENTRY_DATABASE_URL": app_dsn,
            "CONSENTRY_POLICY_SCHEDULER_INTERVAL_SECONDS": "0.2",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            if await flags(db, tenant):
                break
            await asyncio.sleep(0.1)
        assert await flags(db, tenant) == {(ref(7), "performance"): "v2"}
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, out.decode()
    assert b"policy version activated" in out


async def test_a_non_superuser_owner_can_migrate_and_the_scheduler_still_finds_due_versions(
    fresh_database: Callable[[str], Awaitable[str]],
) -> None:
    """FORCE row-level security binds a non-superuser owner too (as in production): the
    migrations must not need a superuser, and the due-version function must still see every
    tenant's versions although it runs as that owner."""
    dsn = await fresh_database("consent_owner")
    owner, app = f"ct_owner_{uuid.uuid4().hex[:8]}", f"ct_app_{uuid.uuid4().hex[:8]}"
    superuser = await asyncpg.connect(dsn)
    try:
        await superuser.execute(f"CREATE ROLE {owner} LOGIN CREATEROLE")
        await superuser.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    finally:
        await superuser.close()
    await migrate_dsn(with_user(dsn, owner), migrations())
    # The operator (here the superuser) makes the application's login role a group member.
    await ensure_login_role(dsn, app, "consentry_consent_rw")

    tenant = uuid.uuid4()
    conn = await asyncpg.connect(with_user(dsn, owner))
    try:
        async with conn.transaction():
            await set_tenant(conn, tenant)
            await conn.execute(
                "INSERT INTO tenants (id, name, subject_key_sealed) VALUES ($1, 'T', $2)",
                tenant,
                bytes(61),
            )
            await seed_default_purposes(conn, tenant)
        assert await conn.fetchval("SELECT count(*) FROM tenants") == 0  # FORCE binds the owner
        app_pool = await asyncpg.create_pool(with_user(dsn, app), min_size=1, max_size=2)
        assert app_pool is not None
        try:
            await publish_v1_v2(app_pool, tenant)
            await decide(conn, tenant, ref(1), "performance", "v1")
            assert await activate_due_versions(app_pool, now=AFTER_V2) == 2
            assert await flags(conn, tenant) == {(ref(1), "performance"): "v2"}
        finally:
            await app_pool.close()
    finally:
        await conn.close()
        superuser = await asyncpg.connect(dsn)
        try:
            for role in (app, owner):
                await superuser.execute(f"REASSIGN OWNED BY {role} TO current_user")
                await superuser.execute(f"DROP OWNED BY {role}")
                await superuser.execute(f"DROP ROLE {role}")
        finally:
            await superuser.close()
