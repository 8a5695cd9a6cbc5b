"""SQL for the audit chain. Entries are only ever written through audit_append() and
audit_append_batch()."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from uuid import UUID

import asyncpg

from consentry.audit.chain.events import Envelopes
from consentry.eventing.db import Connection

_APPEND = "SELECT audit_append($1, $2, $3, $4, $5)"
_APPEND_BATCH = """
SELECT ord, seq, leaf_hash, chain_hash, appended
FROM audit_append_batch($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[])
ORDER BY ord
"""
# The audit topic's EntryAppended rows, in order: row n of tenant slot $3[n] (from 1) gets a
# new event id, the slot's message key ($4) and headers (JSON) cut around that id ($5, $6), and
# payload $7[n] (see `events.Envelopes`). Without `outbox.add`'s per-key advisory lock: every
# writer of a `<tenant>/chain` key holds that tenant's head row lock from before its insert
# until it commits (audit_append_batch, audit_append, audit_lock_head for checkpoints), which
# already puts one key's outbox positions in commit order.
_QUEUE_PUBLISHED = """
INSERT INTO eventing_outbox (event_id, topic, message_key, event_type, headers, payload)
SELECT r.event_id, $1, ($4::bytea[])[r.slot], $2,
       (($5::text[])[r.slot] || r.event_id::text || ($6::text[])[r.slot])::jsonb, r.payload
FROM (SELECT gen_random_uuid() AS event_id, o.slot, o.payload, o.n
      FROM unnest($3::int[], $7::bytea[]) WITH ORDINALITY AS o (slot, payload, n)) AS r
ORDER BY r.n
"""
_HASHES = "SELECT entry, leaf_hash, chain_hash FROM audit_entries WHERE tenant_id = $1 AND seq = $2"
_TENANTS = "SELECT tenant_id, seq, chain_hash FROM audit_chain_heads ORDER BY tenant_id"
_HEAD = "SELECT tenant_id, seq, chain_hash FROM audit_chain_heads WHERE tenant_id = $1"
_WALK = """
SELECT seq, event_id, entry, leaf_hash, chain_hash
FROM audit_entries WHERE tenant_id = $1 ORDER BY seq
"""
_PAGE = """
SELECT seq, event_id, event_type, subject_ref, entry, leaf_hash, chain_hash, appended_at
FROM audit_entries WHERE tenant_id = $1 AND seq > $2
  AND ($3::text IS NULL OR subject_ref = $3)
ORDER BY seq LIMIT $4
"""


async def append(
    conn: Connection,
    *,
    tenant_id: UUID,
    event_id: str,
    event_type: str,
    subject_ref: str,
    entry: bytes,
) -> int:
    """Append one entry to the tenant's chain (idempotent by event id); return its seq."""
    seq: int = await conn.fetchval(_APPEND, tenant_id, event_id, event_type, subject_ref, entry)
    return seq


async def append_batch(
    conn: Connection,
    *,
    tenant_ids: Sequence[UUID | str],
    event_ids: Sequence[str],
    event_types: Sequence[str],
    subject_refs: Sequence[str],
    entries: Sequence[bytes],
) -> list[asyncpg.Record]:
    """Append many entries in array order, as one append() each would (idempotent by event
    id); one row per element, in order: `seq`, `leaf_hash`, `chain_hash`, `appended`
    (False: the event was already in the chain, or earlier in these arrays)."""
    return list(
        await conn.fetch(_APPEND_BATCH, tenant_ids, event_ids, event_types, subject_refs, entries)
    )


async def queue_published(
    conn: Connection, envelopes: Envelopes, tenant_ids: Sequence[str], payloads: Sequence[bytes]
) -> None:
    """Queue the audit topic's events of appended entries (one per tenant id and payload, in
    order; outbox rows); the caller holds the head rows of their tenants (see
    `_QUEUE_PUBLISHED`)."""
    await conn.execute(
        _QUEUE_PUBLISHED,
        envelopes.topic,
        envelopes.event_type,
        [envelopes.slots[tenant_id] for tenant_id in tenant_ids],
        envelopes.keys,
        envelopes.heads,
        envelopes.tails,
        payloads,
    )


async def hashes(conn: Connection, *, tenant_id: UUID, seq: int) -> asyncpg.Record:
    """One stored entry with its leaf and chain hash."""
    row = await conn.fetchrow(_HASHES, tenant_id, seq)
    assert row is not None
    return row


async def heads(conn: Connection) -> list[asyncpg.Record]:
    """Every tenant's chain head (seq and chain hash of the last entry)."""
    return list(await conn.fetch(_TENANTS))


async def head(conn: Connection, *, tenant_id: UUID) -> asyncpg.Record | None:
    """One tenant's chain head, or None when the tenant has no entries."""
    return await conn.fetchrow(_HEAD, tenant_id)


async def walk(
    conn: Connection, *, tenant_id: UUID, prefetch: int = 5000
) -> AsyncIterator[asyncpg.Record]:
    """Every entry of the tenant's chain in order (server-side cursor; needs a transaction)."""
    async for row in conn.cursor(_WALK, tenant_id, prefetch=prefetch):
        yield row


async def page(
    conn: Connection, *, tenant_id: UUID, after_seq: int, limit: int, subject_ref: str | None
) -> list[asyncpg.Record]:
    """Up to `limit` entries after `after_seq`, optionally of one subject."""
    return list(await conn.fetch(_PAGE, tenant_id, after_seq, subject_ref, limit))
