"""The hash chain against a real PostgreSQL: append, idempotency, verification, tampering."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator

import asyncpg
import pytest

from consentry.audit.chain.hashing import GENESIS, chain_hash, leaf_hash
from consentry.audit.chain.service import append_event, entry_bytes, verify_all, verify_tenant
from consentry.audit.v1 import audit_pb2

from .conftest import received

pytestmark = pytest.mark.integration
TENANT_A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
TENANT_B = uuid.UUID("00000000-0000-4000-8000-00000000000b")


async def fill(db: asyncpg.Connection, tenant: uuid.UUID, count: int) -> list[str]:
    ids = []
    for version in range(1, count + 1):
        event = received(tenant, "ab" * 32, version, given=version % 2 == 1)
        async with db.transaction():
            await append_event(db, event)
        ids.append(event.id)
    return ids


async def test_entries_chain_per_tenant_with_rfc6962_leaf_hashes(db: asyncpg.Connection) -> None:
    events = [received(TENANT_A, "ab" * 32, v) for v in (1, 2, 3)]
    seqs = []
    for event in events:
        async with db.transaction():
            seqs.append(await append_event(db, event))
    async with db.transaction():
        other = await append_event(db, received(TENANT_B, "cd" * 32, 1))
    assert seqs == [1, 2, 3]
    assert other == 1

    rows = await db.fetch(
        "SELECT seq, entry, leaf_hash, chain_hash FROM audit_entries"
        " WHERE tenant_id = $1 ORDER BY seq",
        TENANT_A,
    )
    previous = GENESIS
    for row, event in zip(rows, events, strict=True):
        assert row["entry"] == entry_bytes(event)
        assert row["leaf_hash"] == leaf_hash(row["entry"])
        assert row["chain_hash"] == chain_hash(previous, row["leaf_hash"])
        previous = row["chain_hash"]
        stored = audit_pb2.AuditEntry.FromString(row["entry"])
        assert stored.event_id == event.id
        assert stored.data == event.data  # the payload exactly as published


async def test_append_is_idempotent_by_event_id(db: asyncpg.Connection) -> None:
    event = received(TENANT_A, "ab" * 32, 1)
    async with db.transaction():
        first = await append_event(db, event)
        again = await append_event(db, event)
    assert first == again == 1
    assert await db.fetchval("SELECT count(*) FROM audit_entries") == 1


async def test_an_intact_chain_verifies(db: asyncpg.Connection) -> None:
    await fill(db, TENANT_A, 7)
    await fill(db, TENANT_B, 3)
    reports = await verify_all(db)
    assert [(r.tenant_id, r.ok, r.entries) for r in reports] == [
        (str(TENANT_A), True, 7),
        (str(TENANT_B), True, 3),
    ]
    assert reports[0].head_seq == 7


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET entry = '\\x00' WHERE seq = 1",
        "DELETE FROM audit_entries WHERE seq = 1",
        "TRUNCATE audit_entries",
    ],
)
async def test_updates_deletes_and_truncates_are_refused(
    db: asyncpg.Connection, statement: str
) -> None:
    await fill(db, TENANT_A, 2)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(statement)
    assert (await verify_tenant(db, TENANT_A)).ok


async def tamper(db: asyncpg.Connection, statement: str) -> None:
    """What only someone with the database owner's rights could do: bypass the triggers."""
    async with db.transaction():
        await db.execute("ALTER TABLE audit_entries DISABLE TRIGGER USER")
        await db.execute(statement)
        for trigger in ("audit_entries_no_update_delete", "audit_entries_no_truncate"):
            await db.execute(f"ALTER TABLE audit_entries ENABLE ALWAYS TRIGGER {trigger}")


async def test_an_edited_entry_fails_verification_at_that_entry(db: asyncpg.Connection) -> None:
    ids = await fill(db, TENANT_A, 5)
    await tamper(db, "UPDATE audit_entries SET entry = entry || '\\x01'::bytea WHERE seq = 3")
    report = await verify_tenant(db, TENANT_A)
    assert not report.ok
    assert report.broken is not None
    assert (report.broken.seq, report.broken.event_id) == (3, ids[2])
    assert "leaf hash" in report.broken.reason
    assert report.entries == 2


async def test_a_deleted_entry_fails_verification(db: asyncpg.Connection) -> None:
    await fill(db, TENANT_A, 5)
    await tamper(db, "DELETE FROM audit_entries WHERE seq = 2")
    report = await verify_tenant(db, TENANT_A)
    assert report.broken is not None
    assert report.broken.seq == 2
    assert "missing entry" in report.broken.reason


async def test_a_truncated_tail_fails_verification(db: asyncpg.Connection) -> None:
    await fill(db, TENANT_A, 5)
    await tamper(db, "DELETE FROM audit_entries WHERE seq = 5")
    report = await verify_tenant(db, TENANT_A)
    assert report.broken is not None
    assert report.broken.seq == 5
    assert "head is at seq 5" in report.broken.reason


async def test_reordered_entries_fail_verification(db: asyncpg.Connection) -> None:
    await fill(db, TENANT_A, 4)
    await tamper(
        db,
        """
        UPDATE audit_entries AS a SET entry = b.entry, leaf_hash = b.leaf_hash
        FROM audit_entries AS b
        WHERE a.tenant_id = b.tenant_id AND ((a.seq = 2 AND b.seq = 3) OR (a.seq = 3 AND b.seq = 2))
        """,
    )
    report = await verify_tenant(db, TENANT_A)
    assert report.broken is not None
    assert report.broken.seq == 2
    assert "chain hash" in report.broken.reason


async def test_cli_verify_exits_1_on_a_broken_chain(audit_db: str, db: asyncpg.Connection) -> None:
    await fill(db, TENANT_A, 3)
    env = {**os.environ, "CONSENTRY_DATABASE_URL": audit_db}
    code, out = await run_cli(env)
    assert code == 0, out
    assert f"OK      tenant {TENANT_A}: 3 entries" in out
    await tamper(db, "UPDATE audit_entries SET entry = '\\x00'::bytea WHERE seq = 2")
    code, out = await run_cli(env)
    assert code == 1
    assert f"BROKEN  tenant {TENANT_A} at seq 2" in out


async def test_replay_queues_the_audit_topics_events_again(
    db: asyncpg.Connection, audit_db: str
) -> None:
    # After the broker lost its data, followers of consentry.audit.v1 get the entries and
    # checkpoints again from the retained outbox, as every service's `replay` does.
    await fill(db, TENANT_A, 3)
    await db.execute("UPDATE eventing_outbox SET published_at = now()")  # as the relay would
    env = {**os.environ, "CONSENTRY_DATABASE_URL": audit_db}
    code, out = await run_cli(env, "replay", "--since", "2000-01-01")
    assert code == 0, out
    assert "3 event(s) queued for re-publication" in out
    unpublished = await db.fetch(
        "SELECT event_type FROM eventing_outbox WHERE published_at IS NULL ORDER BY position"
    )
    assert [row["event_type"] for row in unpublished] == ["consentry.audit.entry_appended.v1"] * 3


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consentry.audit",
        *(args or ("verify",)),
        env=env,
        stdout=PIPE,
        stderr=STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode()


@pytest.fixture
async def app_conn(audit_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection with the application's rights: a login role in consentry_audit_writer."""
    role = f"ct_app_{uuid.uuid4().hex[:8]}"
    owner = await asyncpg.connect(audit_db)
    await owner.execute(f"CREATE ROLE {role} LOGIN IN ROLE consentry_audit_writer")
    conn = await asyncpg.connect(audit_db, user=role)
    try:
        yield conn
    finally:
        await conn.close()
        await owner.execute(f"DROP ROLE {role}")
        await owner.close()


async def test_the_application_role_can_append_and_read_but_never_change(
    app_conn: asyncpg.Connection,
) -> None:
    async with app_conn.transaction():
        seq = await append_event(app_conn, received(TENANT_A, "ab" * 32, 1))
    assert seq == 1
    assert await app_conn.fetchval("SELECT count(*) FROM audit_entries") == 1
    assert (await verify_tenant(app_conn, TENANT_A)).ok
    for statement in (
        "UPDATE audit_entries SET entry = '\\x00'",
        "DELETE FROM audit_entries",
        "TRUNCATE audit_entries",
        "INSERT INTO audit_entries SELECT * FROM audit_entries",
        "UPDATE audit_chain_heads SET seq = 0",
        "ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_no_update_delete",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.execute(statement)
    assert (await verify_tenant(app_conn, TENANT_A)).ok


async def test_each_append_queues_its_entry_for_the_audit_topic(db: asyncpg.Connection) -> None:
    events = [received(TENANT_A, "ab" * 32, version) for version in (1, 2, 3)]
    for event in events:
        async with db.transaction():
            await append_event(db, event)
    rows = await db.fetch(
        "SELECT topic, message_key, event_type, payload FROM eventing_outbox ORDER BY position"
    )
    assert [row["topic"] for row in rows] == ["consentry.audit.v1"] * 3
    assert {bytes(row["message_key"]) for row in rows} == {f"{TENANT_A}/chain".encode()}
    stored = await db.fetch(
        "SELECT seq, entry, leaf_hash, chain_hash FROM audit_entries ORDER BY seq"
    )
    for row, entry in zip(rows, stored, strict=True):
        assert row["event_type"] == "consentry.audit.entry_appended.v1"
        message = audit_pb2.EntryAppended.FromString(row["payload"])
        assert (message.seq, message.entry) == (entry["seq"], entry["entry"])
        assert (message.leaf_hash, message.chain_hash) == (entry["leaf_hash"], entry["chain_hash"])
        assert message.tenant_id == str(TENANT_A)
