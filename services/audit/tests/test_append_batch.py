"""Batched appends (audit_append_batch) against a real PostgreSQL: byte for byte the chain,
tree and audit-topic events of one append per event; idempotent by event id; same rights."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from consentry.audit import worker
from consentry.audit.__main__ import migrations
from consentry.audit.chain import checkpoints, repository
from consentry.audit.chain import events as chain_events
from consentry.audit.chain.service import append_event, append_events, verify_tenant
from consentry.audit.consentry_verify import (
    GENESIS,
    chain_hash,
    root_from_leaf_hashes,
    verify_export,
)
from consentry.audit.v1 import audit_pb2
from consentry.eventing import catalogue, outbox
from consentry.eventing.envelope import ReceivedEvent
from consentry.eventing.migrations import migrate_dsn

from .conftest import audit_api, received

pytestmark = pytest.mark.integration
TENANTS = [uuid.UUID(f"00000000-0000-4000-8000-0000000000c{n}") for n in range(3)]
# Batch sizes that cross powers of two (the Merkle frontier merges) and repeat.
SIZES = [1, 2, 3, 5, 8, 13, 31, 32, 33, 64, 100]
SIGNER = checkpoints.Signer.from_seed(hashlib.sha256(b"batch").digest())


def script(count: int) -> list[ReceivedEvent]:
    """`count` events interleaved over three tenants and several subjects, in version order."""
    events = []
    for index in range(count):
        tenant = TENANTS[index % 7 % 3]
        subject = f"{index % 5:02x}" * 32
        events.append(received(tenant, subject, index // 5 + 1, given=index % 3 != 0))
    return events


@pytest_asyncio.fixture
async def other_db(
    fresh_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[asyncpg.Connection]:
    """A second, separately migrated audit database."""
    dsn = await fresh_database("audit_b")
    await migrate_dsn(dsn, migrations())
    conn = await asyncpg.connect(dsn)
    yield conn
    await conn.close()


async def stored(conn: asyncpg.Connection) -> dict[str, Any]:
    """Everything an append leaves behind: entries, heads with frontier and root, and the
    EntryAppended events queued for the audit topic (their payloads)."""
    entries = await conn.fetch(
        "SELECT tenant_id, seq, event_id, event_type, subject_ref, entry, leaf_hash, chain_hash"
        " FROM audit_entries ORDER BY tenant_id, seq"
    )
    heads = await conn.fetch(
        "SELECT tenant_id, seq, chain_hash, frontier, audit_frontier_root(frontier) AS root"
        " FROM audit_chain_heads ORDER BY tenant_id"
    )
    published = await conn.fetch(
        "SELECT message_key, payload FROM eventing_outbox WHERE event_type = $1 ORDER BY position",
        catalogue.AUDIT_ENTRY_APPENDED.name,
    )
    return {
        "entries": [tuple(row) for row in entries],
        "heads": [tuple(row) for row in heads],
        "published": [(bytes(row["message_key"]), row["payload"]) for row in published],
    }


def chunks(events: list[ReceivedEvent]) -> list[list[ReceivedEvent]]:
    out, at, turn = [], 0, 0
    while at < len(events):
        size = SIZES[turn % len(SIZES)]
        out.append(events[at : at + size])
        at, turn = at + size, turn + 1
    return out


async def test_batches_build_byte_identical_chains_to_one_append_per_event(
    db: asyncpg.Connection, other_db: asyncpg.Connection
) -> None:
    events = script(700)
    one_by_one = []
    for event in events:
        async with db.transaction():
            one_by_one.append(await append_event(db, event))
    batched = []
    for turn, chunk in enumerate(chunks(events)):
        async with other_db.transaction():
            if turn % 4 == 3:  # single appends and batches mixed on the same chains
                batched += [await append_event(other_db, event) for event in chunk]
            else:
                batched += await append_events(other_db, chunk)
    assert batched == one_by_one

    single, batch = await stored(db), await stored(other_db)
    assert len(batch["entries"]) == len(events)
    assert batch == single
    # And independently of the SQL: the chain and the RFC 6962 root from the stored leaves.
    for tenant_id, seq, chain, _, root in batch["heads"]:
        rows = [e for e in batch["entries"] if e[0] == tenant_id]
        previous = GENESIS
        for row in rows:
            assert row[6] == hashlib.sha256(b"\x00" + row[5]).digest()
            previous = chain_hash(previous, row[6])
            assert row[7] == previous
        assert (seq, chain) == (len(rows), previous)
        assert root == root_from_leaf_hashes([row[6] for row in rows])
        assert (await verify_tenant(other_db, tenant_id)).ok


async def test_an_event_id_is_appended_once_within_and_across_batches(
    db: asyncpg.Connection,
) -> None:
    first, second, third, fourth = (received(TENANTS[0], "ab" * 32, v) for v in range(1, 5))
    async with db.transaction():
        rows = await repository.append_batch(
            db,
            tenant_ids=[str(TENANTS[0])] * 5,
            event_ids=[e.id for e in (first, second, first, third, second)],
            event_types=[first.type.name] * 5,
            subject_refs=[first.subject_ref] * 5,
            entries=[bytes([n]) for n in range(5)],
        )
    assert [(r["ord"], r["seq"], r["appended"]) for r in rows] == [
        (1, 1, True),
        (2, 2, True),
        (3, 1, False),
        (4, 3, True),
        (5, 2, False),
    ]
    assert rows[2]["chain_hash"] == rows[0]["chain_hash"]
    assert rows[4]["leaf_hash"] == rows[1]["leaf_hash"]

    async with db.transaction():  # a later batch redelivers two of them
        assert await append_events(db, [third, fourth, first]) == [3, 4, 1]
    entries = await db.fetch("SELECT seq, event_id FROM audit_entries ORDER BY seq")
    assert [(r["seq"], r["event_id"]) for r in entries] == [
        (1, first.id),
        (2, second.id),
        (3, third.id),
        (4, fourth.id),
    ]
    published = await db.fetch("SELECT payload FROM eventing_outbox ORDER BY position")
    assert [audit_pb2.EntryAppended.FromString(r["payload"]).seq for r in published] == [4]
    assert (await verify_tenant(db, TENANTS[0])).ok


async def test_the_arrays_must_have_one_length(db: asyncpg.Connection) -> None:
    event = received(TENANTS[0], "ab" * 32, 1)
    with pytest.raises(asyncpg.InvalidParameterValueError, match="differ in length"):
        await repository.append_batch(
            db,
            tenant_ids=[event.tenant_id, event.tenant_id],
            event_ids=[event.id],
            event_types=[event.type.name],
            subject_refs=[event.subject_ref],
            entries=[b"x"],
        )
    with pytest.raises(asyncpg.NotNullViolationError):
        await db.fetch(
            "SELECT * FROM audit_append_batch($1, $2, $3, $4, $5)",
            [None],
            [event.id],
            [event.type.name],
            [event.subject_ref],
            [b"x"],
        )
    assert await append_events(db, []) == []
    assert await db.fetchval("SELECT count(*) FROM audit_entries") == 0
    assert await db.fetchval("SELECT count(*) FROM audit_chain_heads") == 0


@pytest_asyncio.fixture
async def login_roles(audit_db: str) -> AsyncIterator[Callable[[bool], Awaitable[str]]]:
    """Factory of login roles on the audit database, in consentry_audit_writer or not."""
    owner = await asyncpg.connect(audit_db)
    created: list[str] = []

    async def create(writer: bool) -> str:
        role = f"ct_batch_{uuid.uuid4().hex[:8]}"
        member = " IN ROLE consentry_audit_writer" if writer else ""
        await owner.execute(f"CREATE ROLE {role} LOGIN{member}")
        created.append(role)
        return role

    yield create
    for role in created:
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE {role}")
    await owner.close()


async def test_only_the_writer_role_may_append_and_nobody_may_rewrite(
    audit_db: str, login_roles: Callable[[bool], Awaitable[str]]
) -> None:
    writer = await asyncpg.connect(audit_db, user=await login_roles(True))
    stranger = await asyncpg.connect(audit_db, user=await login_roles(False))
    try:
        events = [received(TENANTS[1], "cd" * 32, v) for v in (1, 2, 3)]
        async with writer.transaction():
            assert await append_events(writer, events) == [1, 2, 3]
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await append_events(stranger, [received(TENANTS[1], "cd" * 32, 4)])
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await writer.execute("UPDATE audit_entries SET entry = '\\x00'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await writer.execute("UPDATE audit_chain_heads SET seq = 0")
        assert (await verify_tenant(writer, TENANTS[1])).ok
    finally:
        await writer.close()
        await stranger.close()


async def test_a_batch_appended_chain_exports_and_verifies_offline(
    audit_db: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
    events = [received(TENANTS[2], f"{n % 3:02x}" * 32, n + 1) for n in range(90)]
    for chunk in chunks(events):
        async with db.transaction():
            await append_events(db, chunk)
            await checkpoints.checkpoint(
                db, SIGNER, TENANTS[2], every=20, interval=timedelta(hours=1)
            )
    async with audit_api(audit_db, TENANTS[2], "batch-test-key-0123456789abcdef") as client:
        keys = (await client.get("/v1/audit/keys")).json()
        export = tmp_path / "export.jsonl"
        export.write_bytes((await client.get("/v1/audit/export")).content)
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    report = verify_export(str(export), jwks=keys)
    assert report.entries == 90
    assert report.checkpoints >= 3


async def test_after_a_batch_only_its_due_tenants_are_checkpointed(
    audit_db: str, db: asyncpg.Connection
) -> None:
    grown, quiet, new, elsewhere = TENANTS[0], TENANTS[1], TENANTS[2], uuid.uuid4()
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
        for tenant in (grown, quiet, elsewhere):
            await append_events(db, [received(tenant, "ab" * 32, v) for v in range(1, 6)])
            await checkpoints.checkpoint(db, SIGNER, tenant, every=1, interval=timedelta(0))
    batch = [received(grown, "ab" * 32, v) for v in range(6, 10)]
    batch += [received(quiet, "ab" * 32, 6), received(new, "cd" * 32, 1)]
    batch += [received(elsewhere, "ab" * 32, v) for v in range(6, 10)]
    pool = await asyncpg.create_pool(audit_db, min_size=1, max_size=1)
    assert pool is not None
    try:
        checkpointer = worker.Checkpointer(pool, SIGNER, every=3, interval=3600.0)
        async with db.transaction():
            await append_events(db, batch)
            # The hook gets the events of its batch; `elsewhere` grew too, but not in it.
            await checkpointer.after_batch(db, [e for e in batch if e.tenant_id != str(elsewhere)])
    finally:
        await pool.close()
    sizes = await db.fetch(
        "SELECT tenant_id, array_agg(tree_size ORDER BY tree_size) AS sizes"
        " FROM audit_checkpoints GROUP BY tenant_id"
    )
    assert {row["tenant_id"]: row["sizes"] for row in sizes} == {
        grown: [5, 9],  # grew by 4 >= 3
        quiet: [5],  # grew by 1, checkpointed within the hour
        new: [1],  # never checkpointed
        elsewhere: [5],
    }
    hour = timedelta(hours=1)
    assert await checkpoints.due_tenants(db, every=3, interval=hour) == [elsewhere]
    assert await checkpoints.due_tenants(db, every=3, interval=hour, among=[quiet]) == []


async def test_the_queued_entry_appended_rows_are_those_outbox_add_would_write(
    db: asyncpg.Connection,
) -> None:
    """The batch path builds its EntryAppended outbox rows in SQL from one envelope per
    tenant; each row is, column for column, `outbox.columns` of its event."""
    events = script(40)
    async with db.transaction():
        await append_events(db, events[:25])
    async with db.transaction():
        await append_events(db, events[20:])  # five of them again: no second row
    rows = await db.fetch(
        "SELECT event_id, topic, message_key, event_type, headers, payload"
        " FROM eventing_outbox ORDER BY position"
    )
    assert len(rows) == len(events)
    assert len({row["event_id"] for row in rows}) == len(rows)
    for row in rows:
        headers = json.loads(row["headers"])
        message = audit_pb2.EntryAppended.FromString(row["payload"])
        event = dataclasses.replace(
            chain_events.entry_appended(
                message.tenant_id, message.seq, message.entry, message.leaf_hash, message.chain_hash
            ),
            id=str(row["event_id"]),
            time=datetime.fromisoformat(headers["ce_time"]),
        )
        ((event_id,), (topic,), (key,), (kind,), (expected,), (payload,)) = outbox.columns([event])
        assert (str(row["event_id"]), row["topic"], bytes(row["message_key"])) == (
            event_id,
            topic,
            key,
        )
        assert (row["event_type"], headers, row["payload"]) == (kind, json.loads(expected), payload)
    stored = await db.fetch(
        "SELECT tenant_id, seq, entry FROM audit_entries ORDER BY tenant_id, seq"
    )
    published = sorted(
        (uuid.UUID(m.tenant_id), m.seq, m.entry)
        for m in (audit_pb2.EntryAppended.FromString(row["payload"]) for row in rows)
    )
    assert published == [(row["tenant_id"], row["seq"], row["entry"]) for row in stored]
