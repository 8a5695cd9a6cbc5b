"""What every service's HTTP API and command line share: the app skeleton and the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg
import typer
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from consentry.eventing import relay
from consentry.eventing.db import Pool, create_pool
from consentry.eventing.logs import configure_logging
from consentry.eventing.migrations import Migration, migrate_dsn
from consentry.eventing.process import run_worker
from consentry.eventing.settings import (
    ConsentrySettings,
    DatabaseSettings,
    SettingsError,
    load_settings,
)
from consentry.httpapi.auth import DevKeyResolver, KeyResolver
from consentry.httpapi.openapi import document_problems
from consentry.httpapi.ratelimit import KeyRateLimiter
from consentry.httpapi.server import DevAuthSettings, HttpSettings, harden, health_router, serve


class ServiceHttpSettings(DatabaseSettings, HttpSettings):
    """An HTTP API process: its own database and where it listens (keys come from elsewhere)."""


class ServiceApiSettings(ServiceHttpSettings, DevAuthSettings):
    """An HTTP API process: its own database, where it listens, and the API key."""


class MigrateSettings(DatabaseSettings):
    """Applying a service database's migrations."""


Startup = Callable[[FastAPI, Pool], Awaitable[None]]
Shutdown = Callable[[FastAPI], Awaitable[None]]
S = TypeVar("S", bound=ConsentrySettings)
A = TypeVar("A", bound=ServiceHttpSettings)


def cli_settings(settings_class: type[S]) -> S:
    """Load a command's settings and configure logging; a bad setting exits 2 with one line."""
    try:
        settings = load_settings(settings_class)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def dev_key_resolver(pool: Pool, settings: ServiceHttpSettings) -> KeyResolver:
    """The default resolver: the single development key of `ServiceApiSettings`."""
    if not isinstance(settings, ServiceApiSettings):
        raise TypeError("settings without a dev API key need a key_resolver factory")
    return DevKeyResolver(settings.dev_api_key.get_secret_value(), settings.dev_tenant_id)


def create_service_app(
    settings: A,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    on_startup: Startup | None = None,
    on_shutdown: Shutdown | None = None,
    key_resolver: Callable[[Pool, A], KeyResolver] | None = None,
    body_limits: Mapping[str, int] | None = None,
) -> FastAPI:
    """A hardened FastAPI app with a database pool, API-key auth, health and `routers`; its
    OpenAPI documents the problem answers (`consentry.httpapi.openapi`).

    `key_resolver(pool, settings)` builds `app.state.key_resolver` once the pool exists
    (before `on_startup`); the default accepts the development key only. `on_shutdown` runs
    before the pool closes. `body_limits` sets other body-size limits for exact paths.
    """
    resolver_factory = key_resolver or dev_key_resolver

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Request code keeps no session state (transaction-local settings and locks only).
        pool = await create_pool(settings, stateless=True)
        try:
            app.state.pool = pool
            app.state.key_resolver = resolver_factory(pool, settings)
            app.state.rate_limiter = KeyRateLimiter(
                settings.http_rate_limit_per_second, settings.http_rate_limit_burst
            )
            if on_startup is not None:
                await on_startup(app, pool)
            try:
                yield
            finally:
                if on_shutdown is not None:
                    await on_shutdown(app)
        finally:
            await pool.close()

    app = FastAPI(title=title, version="0.1.0", description=description, lifespan=lifespan)

    async def database_ready() -> None:
        await app.state.pool.fetchval("SELECT 1")

    health = health_router({"database": database_ready})
    app.include_router(health)
    for router in routers:
        app.include_router(router)
    document_problems(
        app, skip_paths=[route.path for route in health.routes if isinstance(route, APIRoute)]
    )
    return harden(app, settings, body_limits)


def service_cli(
    service: str,
    *,
    api_settings: type[A],
    create_app: Callable[[A], FastAPI],
    migrations: Callable[[], list[Migration]],
    app_factory: str | None = None,
) -> typer.Typer:
    """A Typer app with the `api` and `migrate` commands; the service adds its workers.

    `app_factory` (`"module:function"`, building the app from the environment) lets the API
    run as several processes (`CONSENTRY_HTTP_WORKERS`).
    """
    cli = typer.Typer(
        help=f"consentry {service} service", no_args_is_help=True, add_completion=False
    )

    @cli.command()
    def api() -> None:
        """Serve the HTTP API."""
        settings = cli_settings(api_settings)
        if settings.http_workers > 1:
            serve(lambda: create_app(settings), settings, factory=app_factory)
        else:
            serve(create_app(settings), settings)

    @cli.command()
    def migrate() -> None:
        """Apply the database's migrations."""
        settings = cli_settings(MigrateSettings)
        applied = asyncio.run(migrate_dsn(settings.database_url, migrations()))
        typer.echo(f"{service} database: {len(applied)} migration(s) applied")

    return cli


def add_worker(
    cli: typer.Typer,
    name: str,
    settings_class: type[S],
    run: Callable[[S, asyncio.Event], Awaitable[None]],
    help_text: str,
) -> None:
    """Add a long-running worker command: load settings, log, run until SIGTERM/SIGINT."""

    def command() -> None:
        settings = cli_settings(settings_class)
        run_worker(lambda stop: run(settings, stop))

    cli.command(name, help=help_text)(command)


def add_replay(cli: typer.Typer) -> None:
    """Add `replay --since T`: re-publish retained outbox events (e.g. after broker data loss)."""

    @cli.command()
    def replay(
        since: datetime = typer.Option(  # noqa: B008
            ...,
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
            help="re-publish events created at or after this time (UTC unless an offset)",
        ),
    ) -> None:
        """Queue retained outbox events for re-publication; the running relay sends them."""
        settings = cli_settings(MigrateSettings)
        moment = since if since.tzinfo else since.replace(tzinfo=UTC)
        count = asyncio.run(_replay(settings.database_url, moment))
        typer.echo(f"{count} event(s) queued for re-publication since {moment.isoformat()}")


async def _replay(dsn: str, since: datetime) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await relay.replay(conn, since)
    finally:
        await conn.close()
