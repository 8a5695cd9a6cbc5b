"""PostgreSQL access shared by every service: the connection type and the pool factory."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from consentry.eventing.settings import DatabaseSettings

# What repository functions receive: a plain connection or one borrowed from a pool.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
Pool: TypeAlias = asyncpg.Pool


async def create_pool(settings: DatabaseSettings) -> Pool:
    """A connection pool for the service's own database."""
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        command_timeout=30,
    )
    assert pool is not None
    return pool
