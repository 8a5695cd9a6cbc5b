"""A service's replica of the tenant directory (docs/adr/0008-tenant-directory.md).

The consent service announces tenants and API keys on `consentry.tenant.v1`. A service that
accepts the same keys has the `api_keys` table and the `consentry_resolve_api_key()`
function of the consent service's migration 0003 in its own migrations, and runs
`run_directory` with a hook of its own for `TenantProvisioned`:

- `TenantProvisioned`: the service's `OnProvisioned` hook, on a connection scoped to the
  tenant, with the announcement's `provisioned_at`. It records what the service keeps of a
  tenant and raises `PoisonMessage` for an announcement it cannot accept;
  `unwrap_subject_key` opens the wrapped subject key for a service that derives subject
  references (dead letter `subject-key-unwrap-failed` when it does not open).
- `ApiKeyIssued`: the key is upserted (scopes, SHA-256 of the secret, issue time).
- `ApiKeyRevoked`: the key is marked revoked, the earliest time winning; an unknown key gets
  a revoked tombstone. Revocation is final: a later `issued` for the key (publish-directory
  re-announces keys, and its events may follow a revocation of the same key) updates its
  scopes and hash but never its revocation, and the consent service never un-revokes a key.
- An event whose key id already belongs to another tenant is dead-lettered
  (`api-key-tenant-mismatch`); any other event type on the topic, `unexpected-event-type`.

Repeats are no-ops besides: the inbox drops a redelivered event id, and a re-announcement
(new event id, same facts) writes what is already there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from uuid import UUID

from pydantic import Field

from consentry.eventing import kafka, topics
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import Connection, create_pool, set_tenant
from consentry.eventing.directory import subject_key_context
from consentry.eventing.envelope import PoisonMessage, ReceivedEvent, field_time
from consentry.eventing.sealing import KEY_BYTES, Sealer, SealingError
from consentry.eventing.settings import DatabaseSettings, KafkaSettings
from consentry.tenant.v1 import tenant_pb2

# A revocation that arrives before its key (or for a key this replica never saw) leaves a
# tombstone: no scopes, a hash no secret has (SHA-256 output is never all zeros in practice,
# and a revoked key is refused before its hash is compared anyway).
TOMBSTONE_HASH = bytes(32)

# The key's tenant whichever tenant it belongs to (the migration's definer function).
_KEY_TENANT = "SELECT tenant_id FROM consentry_resolve_api_key($1)"
# Never touches revoked_at: a key once revoked stays revoked, whatever arrives later (an
# `issued` repeated by publish-directory after the revocation, say).
_UPSERT_KEY = """
INSERT INTO api_keys (id, tenant_id, scopes, secret_hash, issued_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE
SET scopes = EXCLUDED.scopes, secret_hash = EXCLUDED.secret_hash, issued_at = EXCLUDED.issued_at
"""
# The earliest revocation wins (LEAST ignores NULL); unknown keys get a tombstone.
_REVOKE_KEY = """
INSERT INTO api_keys (id, tenant_id, scopes, secret_hash, issued_at, revoked_at)
VALUES ($1, $2, '{}', $3, $4, $4)
ON CONFLICT (id) DO UPDATE SET revoked_at = LEAST(api_keys.revoked_at, EXCLUDED.revoked_at)
"""

# What a service does with `TenantProvisioned` (tenant-scoped connection, the tenant's id,
# the message, its `provisioned_at`); raises PoisonMessage to refuse the announcement.
OnProvisioned = Callable[
    [Connection, UUID, tenant_pb2.TenantProvisioned, datetime], Awaitable[None]
]


class DirectoryFollowerSettings(DatabaseSettings, KafkaSettings):
    """A directory follower: the service's database, the broker and its consumer group
    (each service sets its own default, e.g. `preferences-directory`)."""

    directory_group_id: str = Field(
        description="consumer group, inbox consumer and dead-letter topic "
        "(consentry.dlq.<id>) of the directory follower"
    )


async def key_tenant(conn: Connection, *, key_id: str) -> UUID | None:
    """The tenant of the key `key_id`, whichever it is; None for an unknown key."""
    tenant_id: UUID | None = await conn.fetchval(_KEY_TENANT, key_id)
    return tenant_id


async def upsert_key(
    conn: Connection,
    *,
    key_id: str,
    tenant_id: UUID,
    scopes: Sequence[str],
    secret_hash: bytes,
    issued_at: datetime,
) -> None:
    """Record an issued key (or fill in a tombstone); its revocation, if any, stays."""
    await conn.execute(_UPSERT_KEY, key_id, tenant_id, list(scopes), secret_hash, issued_at)


async def revoke_key(
    conn: Connection, *, key_id: str, tenant_id: UUID, revoked_at: datetime
) -> None:
    """Mark the key revoked (the earliest time wins); a tombstone when it is unknown."""
    await conn.execute(_REVOKE_KEY, key_id, tenant_id, TOMBSTONE_HASH, revoked_at)


def unwrap_subject_key(
    directory: Sealer, tenant_id: UUID, message: tenant_pb2.TenantProvisioned
) -> bytes:
    """The tenant's subject key, opened with the directory key; PoisonMessage
    `subject-key-unwrap-failed` when it does not open for this tenant."""
    try:
        subject_key = directory.open(
            message.wrapped_subject_key, context=subject_key_context(tenant_id)
        )
    except SealingError as error:
        raise PoisonMessage("subject-key-unwrap-failed", str(error)) from None
    if len(subject_key) != KEY_BYTES:
        raise PoisonMessage("subject-key-unwrap-failed", "not a 32-byte key")
    return subject_key


class DirectoryHandler:
    """Applies one directory event in the consumer's transaction (a savepoint per record)."""

    def __init__(self, on_provisioned: OnProvisioned) -> None:
        self._on_provisioned = on_provisioned

    async def __call__(self, conn: Connection, event: ReceivedEvent) -> None:
        """Fold the event into the replica, or raise PoisonMessage."""
        tenant_id = UUID(event.tenant_id)  # decode() checked it; the check matched the payload
        await set_tenant(conn, tenant_id)
        message = event.message
        if isinstance(message, tenant_pb2.TenantProvisioned):
            provisioned_at = field_time(message, "provisioned_at", event.time)
            await self._on_provisioned(conn, tenant_id, message, provisioned_at)
        elif isinstance(message, tenant_pb2.ApiKeyIssued):
            await self._owned_by(conn, tenant_id, message.key_id)
            await upsert_key(
                conn,
                key_id=message.key_id,
                tenant_id=tenant_id,
                scopes=list(message.scopes),
                secret_hash=message.secret_sha256,
                issued_at=field_time(message, "issued_at", event.time),
            )
        elif isinstance(message, tenant_pb2.ApiKeyRevoked):
            await self._owned_by(conn, tenant_id, message.key_id)
            await revoke_key(
                conn,
                key_id=message.key_id,
                tenant_id=tenant_id,
                revoked_at=field_time(message, "revoked_at", event.time),
            )
        else:
            raise PoisonMessage("unexpected-event-type", f"{event.type.name} on the tenant topic")

    @staticmethod
    async def _owned_by(conn: Connection, tenant_id: UUID, key_id: str) -> None:
        owner = await key_tenant(conn, key_id=key_id)
        if owner is not None and owner != tenant_id:
            raise PoisonMessage("api-key-tenant-mismatch", "the key id belongs to another tenant")


async def run_directory(
    settings: DirectoryFollowerSettings, stop: asyncio.Event, on_provisioned: OnProvisioned
) -> None:
    """Follow the tenant topic until `stop` is set (group, inbox consumer and dead letters
    `consentry.dlq.<directory_group_id>`)."""
    pool = await create_pool(settings)
    producer = kafka.producer(settings, "-directory-dlq")
    consumer = kafka.consumer(settings, settings.directory_group_id, topics.TENANT)
    await producer.start()
    await consumer.start()
    try:
        handler = DirectoryHandler(on_provisioned)
        name = settings.directory_group_id
        await EventConsumer(name, consumer, producer, pool, handler).run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
