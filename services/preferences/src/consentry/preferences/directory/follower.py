"""The directory follower: this service's replica of the tenant directory (ADR 0008).

The consent service announces tenants and API keys on `consentry.tenant.v1`; this worker
folds them into `tenants` and `api_keys`, so the preferences API accepts the same keys and
derives the same subject references without reading the consent database.

- `TenantProvisioned`: the subject key is unwrapped with the directory key (a key that does
  not open is dead-lettered, `subject-key-unwrap-failed`) and stored sealed under this
  service's master key, with a fresh key-encryption key and link key of this service's own.
  A repeat keeps those two (they seal data and sign links already handed out: never rotated
  implicitly) and updates the name; a repeat whose subject key differs from the stored one is
  dead-lettered (`subject-key-conflict`): adopting it would orphan every subject reference
  this service holds, so an operator must decide.
- `ApiKeyIssued`: the key is upserted (scopes, SHA-256 of the secret, issue time).
- `ApiKeyRevoked`: the key is marked revoked, the earliest time winning; an unknown key gets
  a revoked tombstone. Revocation is final: a later `issued` for the key (publish-directory
  re-announces keys, and its events may follow a revocation of the same key) updates its
  scopes and hash but never its revocation, and the consent service never un-revokes a key.
- An event whose key id already belongs to another tenant is dead-lettered
  (`api-key-tenant-mismatch`).

Repeats are no-ops besides: the inbox drops a redelivered event id, and a re-announcement
(new event id, same facts) writes what is already there.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from datetime import UTC, datetime
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from consentry.eventing import kafka, topics
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import Connection, create_pool, set_tenant
from consentry.eventing.directory import subject_key_context
from consentry.eventing.envelope import PoisonMessage, ReceivedEvent
from consentry.eventing.sealing import KEY_BYTES, Sealer, SealingError
from consentry.preferences.directory import repository
from consentry.preferences.settings import DirectorySettings
from consentry.preferences.tenants import kek_context, link_key_context
from consentry.tenant.v1 import tenant_pb2


def _time(stamp: Timestamp, present: bool, fallback: datetime) -> datetime:
    if not present:
        return fallback
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise PoisonMessage("schema-violation", "a timestamp is out of range") from None


class DirectoryHandler:
    """Applies one directory event in the consumer's transaction (a savepoint per record)."""

    def __init__(self, *, master: Sealer, directory: Sealer) -> None:
        self._master = master
        self._directory = directory

    async def __call__(self, conn: Connection, event: ReceivedEvent) -> None:
        """Fold the event into the replica, or raise PoisonMessage."""
        tenant_id = UUID(event.tenant_id)  # decode() checked it; the check matched the payload
        await set_tenant(conn, tenant_id)
        message = event.message
        if isinstance(message, tenant_pb2.TenantProvisioned):
            await self._provisioned(conn, tenant_id, message, event.time)
        elif isinstance(message, tenant_pb2.ApiKeyIssued):
            await self._owned_by(conn, tenant_id, message.key_id)
            await repository.upsert_key(
                conn,
                key_id=message.key_id,
                tenant_id=tenant_id,
                scopes=list(message.scopes),
                secret_hash=message.secret_sha256,
                issued_at=_time(message.issued_at, message.HasField("issued_at"), event.time),
            )
        elif isinstance(message, tenant_pb2.ApiKeyRevoked):
            await self._owned_by(conn, tenant_id, message.key_id)
            await repository.revoke_key(
                conn,
                key_id=message.key_id,
                tenant_id=tenant_id,
                revoked_at=_time(message.revoked_at, message.HasField("revoked_at"), event.time),
            )
        else:
            raise PoisonMessage("unexpected-event-type", f"{event.type.name} on the tenant topic")

    async def _provisioned(
        self,
        conn: Connection,
        tenant_id: UUID,
        message: tenant_pb2.TenantProvisioned,
        time: datetime,
    ) -> None:
        context = subject_key_context(tenant_id)
        try:
            subject_key = self._directory.open(message.wrapped_subject_key, context=context)
        except SealingError as error:
            raise PoisonMessage("subject-key-unwrap-failed", str(error)) from None
        if len(subject_key) != KEY_BYTES:
            raise PoisonMessage("subject-key-unwrap-failed", "not a 32-byte key")
        inserted = await repository.insert_tenant(
            conn,
            tenant_id=tenant_id,
            name=message.name,
            subject_key_sealed=self._master.seal(subject_key, context=context),
            kek_sealed=self._master.seal(
                secrets.token_bytes(KEY_BYTES), context=kek_context(tenant_id)
            ),
            link_key_sealed=self._master.seal(
                secrets.token_bytes(KEY_BYTES), context=link_key_context(tenant_id)
            ),
            provisioned_at=_time(message.provisioned_at, message.HasField("provisioned_at"), time),
        )
        if inserted:
            return
        stored = await repository.subject_key_sealed(conn, tenant_id=tenant_id)
        assert stored is not None  # the insert conflicted with it; rows are never deleted
        if not hmac.compare_digest(self._master.open(stored, context=context), subject_key):
            raise PoisonMessage(
                "subject-key-conflict", "the announced subject key differs from the stored one"
            )
        await repository.rename_tenant(conn, tenant_id=tenant_id, name=message.name)

    @staticmethod
    async def _owned_by(conn: Connection, tenant_id: UUID, key_id: str) -> None:
        owner = await repository.key_tenant(conn, key_id=key_id)
        if owner is not None and owner != tenant_id:
            raise PoisonMessage("api-key-tenant-mismatch", "the key id belongs to another tenant")


async def run_directory(settings: DirectorySettings, stop: asyncio.Event) -> None:
    """Follow the tenant topic until `stop` is set (dead letters:
    `consentry.dlq.<directory_group_id>`, by default `consentry.dlq.preferences-directory`)."""
    pool = await create_pool(settings)
    producer = kafka.producer(settings, "-directory-dlq")
    consumer = kafka.consumer(settings, settings.directory_group_id, topics.TENANT)
    await producer.start()
    await consumer.start()
    try:
        handler = DirectoryHandler(master=settings.sealer(), directory=settings.directory_sealer())
        name = settings.directory_group_id
        await EventConsumer(name, consumer, producer, pool, handler).run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
