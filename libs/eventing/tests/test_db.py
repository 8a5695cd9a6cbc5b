"""The pool factory's options, against a real PostgreSQL."""

from __future__ import annotations

import pytest

from consentry.eventing.db import create_pool
from consentry.eventing.settings import DatabaseSettings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("custom_plans", "mode"), [(False, "auto"), (True, "force_custom_plan")])
async def test_custom_plans_hold_for_every_connection_and_use(
    database: str, custom_plans: bool, mode: str
) -> None:
    settings = DatabaseSettings(database_url=database, database_pool_min=1, database_pool_max=2)
    pool = await create_pool(settings, custom_plans=custom_plans)
    try:
        for _ in range(3):  # a connection given back (RESET ALL) keeps it
            async with pool.acquire() as first, pool.acquire() as second:
                assert await first.fetchval("SHOW plan_cache_mode") == mode
                assert await second.fetchval("SHOW plan_cache_mode") == mode
                await first.execute("SET plan_cache_mode = force_generic_plan")
    finally:
        await pool.close()
