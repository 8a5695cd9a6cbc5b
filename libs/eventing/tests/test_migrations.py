"""The migrations runner against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from consentry.eventing.migrations import (
    Migration,
    MigrationError,
    eventing_migrations,
    migrate_dsn,
)

pytestmark = pytest.mark.integration


async def test_applies_once_and_records_each_migration(
    fresh_database: Callable[[str], Awaitable[str]],
) -> None:
    dsn = await fresh_database("migrations")
    first = await migrate_dsn(dsn, eventing_migrations())
    again = await migrate_dsn(dsn, eventing_migrations())
    assert [m.version for m in first] == [1]
    assert again == []
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT namespace, version FROM schema_migrations")
        assert [(r["namespace"], r["version"]) for r in rows] == [("eventing", 1)]
        assert await conn.fetchval("SELECT to_regclass('eventing_outbox') IS NOT NULL")
    finally:
        await conn.close()


async def test_refuses_a_changed_migration(fresh_database: Callable[[str], Awaitable[str]]) -> None:
    dsn = await fresh_database("migrations")
    await migrate_dsn(dsn, eventing_migrations())
    original = eventing_migrations()[0]
    changed = Migration(
        original.namespace, original.version, original.name, original.sql + "\n-- edited"
    )
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate_dsn(dsn, [changed])


async def test_a_failing_migration_leaves_nothing_behind(
    fresh_database: Callable[[str], Awaitable[str]],
) -> None:
    dsn = await fresh_database("migrations")
    broken = Migration(
        "demo", 1, "broken", "CREATE TABLE demo_a (x int); SELECT * FROM no_such_table;"
    )
    with pytest.raises(MigrationError, match="no_such_table"):
        await migrate_dsn(dsn, [broken])
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('demo_a')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()
