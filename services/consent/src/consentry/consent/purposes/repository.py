"""SQL for purposes. Functions receive an open, tenant-scoped connection."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

_SEED = "SELECT consentry_seed_default_purposes($1)"
_LIST = """
SELECT name, title, description, legal_basis, requires_consent, always_on, created_at, updated_at
FROM purposes WHERE tenant_id = $1 ORDER BY name
"""
_GET = """
SELECT name, title, description, legal_basis, requires_consent, always_on, created_at, updated_at
FROM purposes WHERE tenant_id = $1 AND name = $2
"""
# xmax = 0 only for a row this statement inserted: tells a create from an update.
_UPSERT = """
INSERT INTO purposes (tenant_id, name, title, description, legal_basis, always_on)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant_id, name) DO UPDATE SET
    title = EXCLUDED.title, description = EXCLUDED.description,
    legal_basis = EXCLUDED.legal_basis, always_on = EXCLUDED.always_on, updated_at = now()
RETURNING name, title, description, legal_basis, requires_consent, always_on, created_at,
          updated_at, (xmax = 0) AS created
"""


async def seed_defaults(conn: Connection, *, tenant_id: UUID) -> None:
    """Insert the default purposes the tenant does not have yet."""
    await conn.execute(_SEED, tenant_id)


async def list_all(conn: Connection, *, tenant_id: UUID) -> list[asyncpg.Record]:
    """Every purpose of the tenant, by name."""
    return list(await conn.fetch(_LIST, tenant_id))


async def get(conn: Connection, *, tenant_id: UUID, name: str) -> asyncpg.Record | None:
    """One purpose, or None."""
    return await conn.fetchrow(_GET, tenant_id, name)


async def upsert(
    conn: Connection,
    *,
    tenant_id: UUID,
    name: str,
    title: str,
    description: str,
    legal_basis: str,
    always_on: bool,
) -> asyncpg.Record:
    """Create or update a purpose; the row has `created` true when it was new."""
    row = await conn.fetchrow(_UPSERT, tenant_id, name, title, description, legal_basis, always_on)
    assert row is not None
    return row
