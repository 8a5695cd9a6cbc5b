"""The tenant directory's events (docs/adr/0008-tenant-directory.md).

The consent service is the authority for tenants and API keys. It announces each tenant
(`TenantProvisioned`, with its subject key wrapped under the directory key), each API key
(`ApiKeyIssued`: id, scopes and SHA-256 of the secret, never the secret) and each revocation
(`ApiKeyRevoked`) on `consentry.tenant.v1`, through the outbox, in the transaction that
creates the tenant or changes the key. Every event has the key `<tenant>/tenant`, so one
tenant's directory history is in order on one partition.

`publish_directory` announces the whole directory again (`python -m consentry.consent
publish-directory`): for a service that joins later, or after the broker lost its data.
Consumers treat a repeat as a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from google.protobuf.message import Message

from consentry.consent.db import set_tenant
from consentry.eventing import catalogue, outbox
from consentry.eventing.db import Connection
from consentry.eventing.directory import subject_key_context
from consentry.eventing.envelope import Event, to_timestamp
from consentry.eventing.sealing import Sealer
from consentry.tenant.v1 import tenant_pb2

SOURCE = "/consentry/consent"

# Every tenant id, across tenants (migration 0008: the one way past row-level security).
_TENANT_IDS = "SELECT tenant_id FROM consentry_directory_tenants() AS tenant_id"
_TENANT = "SELECT name, subject_key_sealed, created_at FROM tenants WHERE id = $1"
# The secret's hash only through consentry_resolve_api_key(), so that the application's role
# (which may not read secret_hash) can run this as well as the owner. FOR SHARE: a revocation
# in flight commits (and queues its event) either before this reads the key, which then
# reads it revoked, or after this transaction, whose events then precede its event.
_KEYS = """
SELECT k.id, k.scopes, k.created_at, k.revoked_at, r.secret_hash
FROM api_keys AS k CROSS JOIN LATERAL consentry_resolve_api_key(k.id) AS r
WHERE k.tenant_id = $1
ORDER BY k.created_at, k.id
FOR SHARE OF k
"""


def _event(
    tenant_id: UUID, event_type: catalogue.EventType, message: Message, at: datetime
) -> Event:
    return Event(
        type=event_type,
        tenant_id=str(tenant_id),
        subject_ref=catalogue.TENANT_SUBJECT,
        message=message,
        source=SOURCE,
        time=at,
    )


def provisioned_event(
    *,
    tenant_id: UUID,
    name: str,
    subject_key: bytes,
    directory: Sealer,
    provisioned_at: datetime,
) -> Event:
    """`consentry.tenant.provisioned.v1`: the clear `subject_key` wrapped under the directory
    key (`directory`), bound to the tenant by its sealing context."""
    message = tenant_pb2.TenantProvisioned(
        tenant_id=str(tenant_id),
        name=name,
        wrapped_subject_key=directory.seal(subject_key, context=subject_key_context(tenant_id)),
        provisioned_at=to_timestamp(provisioned_at),
    )
    return _event(tenant_id, catalogue.TENANT_PROVISIONED, message, provisioned_at)


def key_issued_event(
    *,
    tenant_id: UUID,
    key_id: str,
    scopes: Sequence[str],
    secret_hash: bytes,
    issued_at: datetime,
) -> Event:
    """`consentry.tenant.api_key_issued.v1`: id, scopes and SHA-256 of the secret."""
    message = tenant_pb2.ApiKeyIssued(
        tenant_id=str(tenant_id),
        key_id=key_id,
        scopes=sorted(scopes),
        secret_sha256=secret_hash,
        issued_at=to_timestamp(issued_at),
    )
    return _event(tenant_id, catalogue.API_KEY_ISSUED, message, issued_at)


def key_revoked_event(*, tenant_id: UUID, key_id: str, revoked_at: datetime) -> Event:
    """`consentry.tenant.api_key_revoked.v1`."""
    message = tenant_pb2.ApiKeyRevoked(
        tenant_id=str(tenant_id), key_id=key_id, revoked_at=to_timestamp(revoked_at)
    )
    return _event(tenant_id, catalogue.API_KEY_REVOKED, message, revoked_at)


@dataclass(frozen=True)
class Announced:
    """What `publish_directory` queued: tenants, keys and revocations."""

    tenants: int = 0
    api_keys: int = 0
    revocations: int = 0

    def __add__(self, other: Announced) -> Announced:
        return Announced(
            self.tenants + other.tenants,
            self.api_keys + other.api_keys,
            self.revocations + other.revocations,
        )


async def announce_tenant(
    conn: Connection, *, tenant_id: UUID, sealer: Sealer, directory: Sealer
) -> Announced:
    """Queue the tenant's directory events again (the tenant, then each key, then each
    revocation) in `conn`'s open transaction, which it scopes to the tenant. `sealer` opens
    the stored subject key (the master key), `directory` wraps it."""
    await set_tenant(conn, tenant_id)
    tenant = await conn.fetchrow(_TENANT, tenant_id)
    if tenant is None:
        return Announced()
    subject_key = sealer.open(tenant["subject_key_sealed"], context=subject_key_context(tenant_id))
    keys = await conn.fetch(_KEYS, tenant_id)
    events = [
        provisioned_event(
            tenant_id=tenant_id,
            name=tenant["name"],
            subject_key=subject_key,
            directory=directory,
            provisioned_at=tenant["created_at"],
        )
    ]
    events += [
        key_issued_event(
            tenant_id=tenant_id,
            key_id=key["id"],
            scopes=key["scopes"],
            secret_hash=key["secret_hash"],
            issued_at=key["created_at"],
        )
        for key in keys
    ]
    revoked = [key for key in keys if key["revoked_at"] is not None]
    events += [
        key_revoked_event(tenant_id=tenant_id, key_id=key["id"], revoked_at=key["revoked_at"])
        for key in revoked
    ]
    await outbox.add_many(conn, events)
    return Announced(1, len(keys), len(revoked))


async def publish_directory(conn: Connection, *, sealer: Sealer, directory: Sealer) -> Announced:
    """Queue every tenant's directory events again, one transaction per tenant (a large
    directory is not one huge transaction; a failure keeps what was queued before it)."""
    async with conn.transaction():
        tenant_ids = [row["tenant_id"] for row in await conn.fetch(_TENANT_IDS)]
    total = Announced()
    for tenant_id in tenant_ids:
        async with conn.transaction():
            total += await announce_tenant(
                conn, tenant_id=tenant_id, sealer=sealer, directory=directory
            )
    return total
