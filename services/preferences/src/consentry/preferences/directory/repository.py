"""SQL of the tenant directory replica. Functions receive an open connection scoped to the
tenant (RLS); `key_tenant` alone looks across tenants, through the definer function."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from consentry.eventing.db import Connection

# A revocation that arrives before its key (or for a key this replica never saw) leaves a
# tombstone: no scopes, a hash no secret has (SHA-256 output is never all zeros in practice,
# and a revoked key is refused before its hash is compared anyway).
TOMBSTONE_HASH = bytes(32)

_INSERT_TENANT = """
INSERT INTO tenants (id, name, subject_key_sealed, kek_sealed, link_key_sealed, provisioned_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
_SUBJECT_KEY = "SELECT subject_key_sealed FROM tenants WHERE id = $1"
_RENAME = "UPDATE tenants SET name = $2 WHERE id = $1 AND name IS DISTINCT FROM $2"
# The key's tenant whichever tenant it belongs to (migration 0001's definer function).
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


async def insert_tenant(
    conn: Connection,
    *,
    tenant_id: UUID,
    name: str,
    subject_key_sealed: bytes,
    kek_sealed: bytes,
    link_key_sealed: bytes,
    provisioned_at: datetime,
) -> bool:
    """Add the tenant unless it exists; False (nothing written) when it does."""
    inserted = await conn.fetchval(
        _INSERT_TENANT,
        tenant_id,
        name,
        subject_key_sealed,
        kek_sealed,
        link_key_sealed,
        provisioned_at,
    )
    return inserted is not None


async def subject_key_sealed(conn: Connection, *, tenant_id: UUID) -> bytes | None:
    """The tenant's sealed subject key, or None for an unknown tenant."""
    sealed: bytes | None = await conn.fetchval(_SUBJECT_KEY, tenant_id)
    return sealed


async def rename_tenant(conn: Connection, *, tenant_id: UUID, name: str) -> None:
    """Set the tenant's display name."""
    await conn.execute(_RENAME, tenant_id, name)


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
