"""SQL for API keys. Functions receive an open connection (tenant-scoped, except resolve)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

# The application role may not read secret_hash: only the resolve function returns it.
_INSERT = """
INSERT INTO api_keys (id, tenant_id, name, scopes, secret_hash, created_by_key)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, name, scopes, created_at, revoked_at, created_by_key
"""
_LIST = """
SELECT id, name, scopes, created_at, revoked_at, created_by_key
FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id
"""
# A second revocation keeps the first time.
_REVOKE = """
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = $1 AND tenant_id = $2
RETURNING revoked_at
"""


# Across tenants, before the tenant is known: only through the SECURITY DEFINER function.
async def insert(
    conn: Connection,
    *,
    key_id: str,
    tenant_id: UUID,
    name: str,
    scopes: Sequence[str],
    secret_hash: bytes,
    created_by_key: str | None,
) -> asyncpg.Record:
    """Store a new key (its secret's hash only); return it as listed."""
    row = await conn.fetchrow(
        _INSERT, key_id, tenant_id, name, list(scopes), secret_hash, created_by_key
    )
    assert row is not None
    return row


async def list_keys(conn: Connection, *, tenant_id: UUID) -> list[asyncpg.Record]:
    """Every key of the tenant, revoked ones too, oldest first."""
    return list(await conn.fetch(_LIST, tenant_id))


async def revoke(conn: Connection, *, tenant_id: UUID, key_id: str) -> datetime | None:
    """Mark the tenant's key revoked; when (the first revocation), or None when the tenant
    has no such key."""
    revoked_at: datetime | None = await conn.fetchval(_REVOKE, key_id, tenant_id)
    return revoked_at
