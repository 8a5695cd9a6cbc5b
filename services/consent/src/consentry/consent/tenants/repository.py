"""SQL for tenants."""

from __future__ import annotations

from uuid import UUID

from consentry.eventing.db import Connection

_ENSURE = """
INSERT INTO tenants (id, name, subject_key) VALUES ($1, $2, $3)
ON CONFLICT (id) DO NOTHING
"""
_SUBJECT_KEY = "SELECT subject_key FROM tenants WHERE id = $1"


async def ensure(conn: Connection, *, tenant_id: UUID, name: str, subject_key: bytes) -> None:
    """Create the tenant unless it exists (an existing tenant keeps its key)."""
    await conn.execute(_ENSURE, tenant_id, name, subject_key)


async def get_subject_key(conn: Connection, *, tenant_id: UUID) -> bytes | None:
    """The tenant's HMAC key for subject references, or None for an unknown tenant."""
    key: bytes | None = await conn.fetchval(_SUBJECT_KEY, tenant_id)
    return key
