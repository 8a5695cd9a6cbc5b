"""What every service's HTTP API and command line share: the app skeleton and the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import typer
from fastapi import APIRouter, FastAPI

from consentry.eventing.db import Pool, create_pool
from consentry.eventing.logs import configure_logging
from consentry.eventing.migrations import Migration, migrate_dsn
from consentry.eventing.process import run_worker
from consentry.eventing.settings import ConsentrySettings, DatabaseSettings, load_settings
from consentry.httpapi.auth import DevKeyResolver
from consentry.httpapi.server import DevAuthSettings, HttpSettings, harden, health_router, serve


class ServiceApiSettings(DatabaseSettings, HttpSettings, DevAuthSettings):
    """An HTTP API process: its own database, where it listens, and the API key."""


class MigrateSettings(DatabaseSettings):
    """Applying a service database's migrations."""


Startup = Callable[[FastAPI, Pool], Awaitable[None]]
A = TypeVar("A", bound=ServiceApiSettings)
W = TypeVar("W", bound=ConsentrySettings)


def create_service_app(
    settings: ServiceApiSettings,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    on_startup: Startup | None = None,
) -> FastAPI:
    """A hardened FastAPI app with a database pool, API-key auth, health and `routers`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        try:
            app.state.pool = pool
            app.state.key_resolver = DevKeyResolver(
                settings.dev_api_key.get_secret_value(), settings.dev_tenant_id
            )
            if on_startup is not None:
                await on_startup(app, pool)
            yield
        finally:
            await pool.close()

    app = FastAPI(title=title, version="0.1.0", description=description, lifespan=lifespan)

    async def database_ready() -> None:
        await app.state.pool.fetchval("SELECT 1")

    app.include_router(health_router({"database": database_ready}))
    for router in routers:
        app.include_router(router)
    return harden(app, settings)


def service_cli(
    service: str,
    *,
    api_settings: type[A],
    create_app: Callable[[A], FastAPI],
    migrations: Callable[[], list[Migration]],
) -> typer.Typer:
    """A Typer app with the `api` and `migrate` commands; the service adds its workers."""
    cli = typer.Typer(
        help=f"consentry {service} service", no_args_is_help=True, add_completion=False
    )

    @cli.command()
    def api() -> None:
        """Serve the HTTP API."""
        settings = load_settings(api_settings)
        configure_logging(settings.log_level, settings.log_format)
        serve(create_app(settings), settings)

    @cli.command()
    def migrate() -> None:
        """Apply the database's migrations."""
        settings = load_settings(MigrateSettings)
        configure_logging(settings.log_level, settings.log_format)
        applied = asyncio.run(migrate_dsn(settings.database_url, migrations()))
        typer.echo(f"{service} database: {len(applied)} migration(s) applied")

    return cli


def add_worker(
    cli: typer.Typer,
    name: str,
    settings_class: type[W],
    run: Callable[[W, asyncio.Event], Awaitable[None]],
    help_text: str,
) -> None:
    """Add a long-running worker command: load settings, log, run until SIGTERM/SIGINT."""

    def command() -> None:
        settings = load_settings(settings_class)
        configure_logging(settings.log_level, settings.log_format)
        run_worker(lambda stop: run(settings, stop))

    cli.command(name, help=help_text)(command)
