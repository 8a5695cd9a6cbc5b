"""Tenant-scoped database access: every query of a request runs inside `tenant_transaction`.

Row-level security (migration 0002) shows a tenant-owned table's rows only to the tenant named
by the transaction-local setting `consentry.tenant_id`, so a query that forgot its
`tenant_id = $1` still cannot see or write another tenant's rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from consentry.eventing.db import Connection, Pool

_SET_TENANT = "SELECT set_config('consentry.tenant_id', $1, true)"


async def set_tenant(conn: Connection, tenant_id: UUID) -> None:
    """Scope the rest of the open transaction to `tenant_id`."""
    if not conn.is_in_transaction():
        raise RuntimeError("set_tenant must run inside a transaction (the setting is local)")
    await conn.execute(_SET_TENANT, str(tenant_id))


@asynccontextmanager
async def tenant_transaction(pool: Pool, tenant_id: UUID) -> AsyncIterator[Connection]:
    """A pooled connection in a transaction scoped to `tenant_id`; commits on success."""
    async with pool.acquire() as conn, conn.transaction():
        await set_tenant(conn, tenant_id)
        yield conn
