"""Appending events to the chain and verifying it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from consentry.audit.chain import events, repository
from consentry.audit.chain.hashing import GENESIS, chain_hash, leaf_hash
from consentry.audit.chain.models import BrokenEntry, ChainReport
from consentry.audit.v1 import audit_pb2
from consentry.eventing import outbox
from consentry.eventing.db import Connection
from consentry.eventing.envelope import CONTENT_TYPE, ReceivedEvent

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def entry_bytes(event: ReceivedEvent) -> bytes:
    """The bytes stored (and hashed) for one event: a serialised AuditEntry, with the
    event's traceparent when it had one (an untraced event's bytes are as they always were)."""
    return audit_pb2.AuditEntry(
        tenant_id=event.tenant_id,
        event_id=event.id,
        event_type=event.type.name,
        event_source=event.source,
        subject_ref=event.subject_ref,
        event_time=_timestamp(event.time),
        content_type=CONTENT_TYPE,
        data=event.data,
        topic=event.type.topic,
        traceparent=event.traceparent or "",
    ).SerializeToString(deterministic=True)


def _timestamp(moment: datetime) -> Timestamp:
    """`Timestamp().FromDatetime(moment)`, in half the time for an aware `moment`."""
    if moment.tzinfo is None:  # naive: taken as UTC, as FromDatetime does
        moment = moment.replace(tzinfo=UTC)
    since = moment - _EPOCH
    return Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


async def append_event(conn: Connection, event: ReceivedEvent) -> int:
    """Append one received event to its tenant's chain and queue its publication on the
    audit topic (same transaction); return its seq."""
    tenant_id = UUID(event.tenant_id)
    entry = entry_bytes(event)
    seq = await repository.append(
        conn,
        tenant_id=tenant_id,
        event_id=event.id,
        event_type=event.type.name,
        subject_ref=event.subject_ref,
        entry=entry,
    )
    stored = await repository.hashes(conn, tenant_id=tenant_id, seq=seq)
    await outbox.add(
        conn,
        events.entry_appended(
            event.tenant_id, seq, stored["entry"], stored["leaf_hash"], stored["chain_hash"]
        ),
    )
    return seq


@dataclass(frozen=True)
class Prepared:
    """Received events made ready to append, before any chain head is locked: the arrays of
    `audit_append_batch()`."""

    tenant_ids: list[str]
    event_ids: list[str]
    event_types: list[str]
    subject_refs: list[str]
    entries: list[bytes]

    def __len__(self) -> int:
        return len(self.event_ids)

    def __getitem__(self, part: slice) -> Prepared:
        return Prepared(*(getattr(self, field.name)[part] for field in fields(self)))

    @classmethod
    def join(cls, parts: Sequence[Prepared]) -> Prepared:
        """The parts one after the other."""
        names = [field.name for field in fields(cls)]
        return cls(
            *(list(itertools.chain.from_iterable(getattr(p, n) for p in parts)) for n in names)
        )


def prepare(received: Sequence[ReceivedEvent]) -> Prepared:
    """The CPU work of appending `received` that does not need the chain heads."""
    return Prepared(
        tenant_ids=[event.tenant_id for event in received],
        event_ids=[event.id for event in received],
        event_types=[event.type.name for event in received],
        subject_refs=[event.subject_ref for event in received],
        entries=[entry_bytes(event) for event in received],
    )


async def append_prepared(conn: Connection, batch: Prepared) -> list[asyncpg.Record]:
    """Append a prepared batch, in order, to its tenants' chains in one call, and queue the
    publication of each newly appended entry on the audit topic (same transaction). One row
    per event: `seq`, `leaf_hash`, `chain_hash`, `appended` (False: already in the chain, or
    earlier in the batch). The chain heads stay locked until the transaction ends."""
    if not batch:
        return []
    rows = await repository.append_batch(
        conn,
        tenant_ids=batch.tenant_ids,
        event_ids=batch.event_ids,
        event_types=batch.event_types,
        subject_refs=batch.subject_refs,
        entries=batch.entries,
    )
    new = [at for at, row in enumerate(rows) if row["appended"]]
    if new:
        tenants = [batch.tenant_ids[at] for at in new]
        payloads = [
            events.entry_appended_payload(
                batch.tenant_ids[at],
                rows[at]["seq"],
                batch.entries[at],
                rows[at]["leaf_hash"],
                rows[at]["chain_hash"],
            )
            for at in new
        ]
        envelopes = events.entry_appended_envelopes(tenants)
        await repository.queue_published(conn, envelopes, tenants, payloads)
    return rows


async def append_events(conn: Connection, received: Sequence[ReceivedEvent]) -> list[int]:
    """Append received events, in order, to their tenants' chains in one call, and queue the
    publication of each newly appended entry on the audit topic (same transaction); return
    their seqs. The same chain as `append_event` once per event (audit_append_batch())."""
    return [row["seq"] for row in await append_prepared(conn, prepare(received))]


async def verify_tenant(conn: Connection, tenant_id: UUID) -> ChainReport:
    """Walk one tenant's chain, recomputing every hash; report the first broken entry."""
    tenant = str(tenant_id)
    previous, expected_seq, checked = GENESIS, 1, 0
    broken: BrokenEntry | None = None
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head = await repository.head(conn, tenant_id=tenant_id)
        async for row in repository.walk(conn, tenant_id=tenant_id):
            reason = None
            leaf = leaf_hash(row["entry"])
            if row["seq"] != expected_seq:
                reason = f"missing entry: expected seq {expected_seq}, found {row['seq']}"
            elif leaf != row["leaf_hash"]:
                reason = "entry bytes do not match their leaf hash"
            elif chain_hash(previous, leaf) != row["chain_hash"]:
                reason = "chain hash does not follow from the previous entry"
            if reason:
                broken = BrokenEntry(
                    tenant_id=tenant, seq=expected_seq, event_id=row["event_id"], reason=reason
                )
                break
            previous, expected_seq, checked = row["chain_hash"], expected_seq + 1, checked + 1
    head_seq = head["seq"] if head else 0
    head_hash = head["chain_hash"] if head else GENESIS
    if broken is None and (head_seq != checked or head_hash != previous):
        broken = BrokenEntry(
            tenant_id=tenant,
            seq=checked + 1,
            event_id=None,
            reason=f"chain ends at seq {checked} but its head is at seq {head_seq}",
        )
    return ChainReport(
        tenant_id=tenant,
        ok=broken is None,
        entries=checked,
        head_seq=head_seq,
        head_hash=head_hash.hex(),
        broken=broken,
    )


async def verify_all(conn: Connection) -> list[ChainReport]:
    """Verify every tenant's chain."""
    return [await verify_tenant(conn, row["tenant_id"]) for row in await repository.heads(conn)]
