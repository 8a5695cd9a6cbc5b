"""PostgreSQL access shared by every service: the connection type and the pool factory."""

from __future__ import annotations

from typing import TypeAlias

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


async def create_pool(settings: DatabaseSettings, *, stateless: bool = False) -> Pool:
    """A connection pool for the service's own database (`stateless`: see NoResetConnection)."""
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        command_timeout=30,
        connection_class=NoResetConnection if stateless else asyncpg.Connection,
    )
    assert pool is not None
    return pool
