"""SQL for tenants. Functions receive an open connection scoped to the tenant (RLS)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

_INSERT = """
INSERT INTO tenants (id, name, subject_key_sealed) VALUES ($1, $2, $3)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
_SUBJECT_KEY = "SELECT subject_key_sealed FROM tenants WHERE id = $1"
_GET = "SELECT id, name, created_at FROM tenants WHERE id = $1"


async def insert(
    conn: Connection, *, tenant_id: UUID, name: str, subject_key_sealed: bytes
) -> bool:
    """Create the tenant; False (and nothing written) when it exists already."""
    created = await conn.fetchval(_INSERT, tenant_id, name, subject_key_sealed)
    return created is not None


async def get_subject_key_sealed(conn: Connection, *, tenant_id: UUID) -> bytes | None:
    """The tenant's sealed subject key, or None for an unknown tenant."""
    sealed: bytes | None = await conn.fetchval(_SUBJECT_KEY, tenant_id)
    return sealed


async def get(conn: Connection, *, tenant_id: UUID) -> asyncpg.Record | None:
    """The tenant's id, name and creation time, or None."""
    return await conn.fetchrow(_GET, tenant_id)
