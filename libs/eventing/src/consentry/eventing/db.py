"""PostgreSQL access shared by every service: the connection type, the pool factory, and
tenant-scoped transactions.

Row-level security (each service's tenant-isolation migration) shows a tenant-owned table's
rows only to the tenant named by the transaction-local setting `consentry.tenant_id`, so a
query that forgot its `tenant_id = $1` still cannot see or write another tenant's rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from consentry.eventing.settings import DatabaseSettings

# What repository functions receive: a plain connection or one borrowed from a pool.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
Pool: TypeAlias = asyncpg.Pool


class NoResetConnection(asyncpg.Connection):
    """A pooled connection given back without asyncpg's reset query (`RESET ALL`, `UNLISTEN
    *`, `CLOSE ALL`, advisory unlocks: one more round trip per use).

    Only for code that keeps no session state: settings only with `set_config(..., true)`,
    advisory locks only `pg_advisory_xact_lock`, no LISTEN, no cursors outside transactions.
    An open transaction is still rolled back on release.
    """

    def get_reset_query(self) -> str:
        """Nothing to reset (see the class docstring)."""
        return ""


# Every statement planned for its own parameters (and the table sizes of the moment).
CUSTOM_PLANS = {"plan_cache_mode": "force_custom_plan"}


async def create_pool(
    settings: DatabaseSettings, *, stateless: bool = False, custom_plans: bool = False
) -> Pool:
    """A connection pool for the service's own database (`stateless`: see NoResetConnection).

    `custom_plans`: PostgreSQL plans each execution of a statement afresh instead of reusing
    the generic plan it caches for a prepared statement after a few runs. For processes whose
    statements take arrays of any length (a generic plan assumes a few elements) on tables
    that grow quickly: a generic plan made while a table was small keeps scanning it
    sequentially until the next ANALYZE, foreign-key checks included (measured: 69,000 such
    scans reading 100 million rows in 30 seconds of erasure requests on a new stack).
    Planning costs a few microseconds per statement.

    Every session carries the process's name as its `application_name`
    (`CONSENTRY_DATABASE_APPLICATION_NAME`, by default `consentry <service> <command>`)."""
    server_settings = {"application_name": settings.database_application_name}
    if custom_plans:
        server_settings.update(CUSTOM_PLANS)
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        command_timeout=30,
        connection_class=NoResetConnection if stateless else asyncpg.Connection,
        server_settings=server_settings,
    )
    assert pool is not None
    return pool


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
