"""SQL of this service's tenants in the tenant directory replica (the API keys' SQL is the
shared `consentry.eventing.replica`). Functions receive an open connection scoped to the
tenant (RLS)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from consentry.eventing.db import Connection

# A re-announced tenant keeps its first provisioning time; only its name may change.
_RECORD = """
INSERT INTO tenants (id, name, provisioned_at) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name
WHERE tenants.name IS DISTINCT FROM EXCLUDED.name
"""
_EXISTS = "SELECT EXISTS (SELECT FROM tenants WHERE id = $1)"


async def record_tenant(
    conn: Connection, *, tenant_id: UUID, name: str, provisioned_at: datetime
) -> None:
    """Add the tenant, or set its name when it exists."""
    await conn.execute(_RECORD, tenant_id, name, provisioned_at)


async def tenant_exists(conn: Connection, *, tenant_id: UUID) -> bool:
    """Whether the tenant directory has brought the tenant here."""
    exists: bool = await conn.fetchval(_EXISTS, tenant_id)
    return exists
