"""The pool factory's options, against a real PostgreSQL."""

from __future__ import annotations

import pytest

from consentry.eventing.db import create_pool
from consentry.eventing.settings import DatabaseSettings, process_name

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


async def test_every_session_names_the_process_it_serves(database: str) -> None:
    settings = DatabaseSettings(
        database_url=database,
        database_pool_min=2,
        database_pool_max=2,
        database_application_name="consentry consent rights",
    )
    pool = await create_pool(settings, custom_plans=True)
    try:
        async with pool.acquire() as first, pool.acquire() as second:
            names = await first.fetch(
                "SELECT application_name FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                [first.get_server_pid(), second.get_server_pid()],
            )
            assert [row["application_name"] for row in names] == ["consentry consent rights"] * 2
            assert await first.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (
            ["/x/src/consentry/consent/__main__.py", "rights-tracker"],
            "consentry consent rights-tracker",
        ),
        (
            ["/x/consentry/subprocessors/__main__.py", "notifier", "--x"],
            "consentry subprocessors notifier",
        ),
        (["/x/consentry/audit/__main__.py", "--help"], "consentry audit"),
        (["/venv/bin/pytest", "-q"], "pytest"),
        ([], "python"),
    ],
)
def test_the_default_application_name_is_the_service_and_command(
    argv: list[str], name: str
) -> None:
    assert process_name(argv) == name
