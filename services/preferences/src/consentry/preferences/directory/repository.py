"""SQL of this service's tenants in the tenant directory replica (the API keys' SQL is the
shared `consentry.eventing.replica`). Functions receive an open connection scoped to the
tenant (RLS)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from consentry.eventing.db import Connection

_INSERT_TENANT = """
INSERT INTO tenants (id, name, subject_key_sealed, kek_sealed, link_key_sealed, provisioned_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
_SUBJECT_KEY = "SELECT subject_key_sealed FROM tenants WHERE id = $1"
_RENAME = "UPDATE tenants SET name = $2 WHERE id = $1 AND name IS DISTINCT FROM $2"


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
