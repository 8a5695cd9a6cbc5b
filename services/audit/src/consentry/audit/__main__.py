"""`python -m consentry.audit api|appender|migrate|verify`: the audit service's processes."""

from __future__ import annotations

import asyncio
import sys
from uuid import UUID

import asyncpg
import typer

from consentry.audit.chain.models import ChainReport
from consentry.audit.chain.service import verify_all, verify_tenant
from consentry.audit.settings import ApiSettings, AppenderSettings, DatabaseOnlySettings
from consentry.eventing.logs import configure_logging
from consentry.eventing.migrations import Migration, eventing_migrations, load, migrate_dsn
from consentry.eventing.process import run_worker
from consentry.eventing.settings import load_settings

cli = typer.Typer(help="consentry audit service", no_args_is_help=True, add_completion=False)


def migrations() -> list[Migration]:
    """Every migration of the audit database, shared eventing tables first."""
    return [*eventing_migrations(), *load("audit", "consentry.audit")]


@cli.command()
def api() -> None:
    """Serve the audit HTTP API."""
    from consentry.audit.app import create_app
    from consentry.httpapi.server import serve

    settings = load_settings(ApiSettings)
    configure_logging(settings.log_level, settings.log_format)
    serve(create_app(settings), settings)


@cli.command()
def appender() -> None:
    """Consume event topics and append every event to the audit chain."""
    from consentry.audit.worker import run_appender

    settings = load_settings(AppenderSettings)
    configure_logging(settings.log_level, settings.log_format)
    run_worker(lambda stop: run_appender(settings, stop))


@cli.command()
def migrate() -> None:
    """Apply the audit database's migrations."""
    settings = load_settings(DatabaseOnlySettings)
    configure_logging(settings.log_level, settings.log_format)
    applied = asyncio.run(migrate_dsn(settings.database_url, migrations()))
    typer.echo(f"audit database: {len(applied)} migration(s) applied")


async def _verify(dsn: str, tenant: UUID | None) -> list[ChainReport]:
    conn = await asyncpg.connect(dsn)
    try:
        return [await verify_tenant(conn, tenant)] if tenant else await verify_all(conn)
    finally:
        await conn.close()


@cli.command()
def verify(
    tenant: UUID | None = typer.Option(None, help="verify only this tenant's chain"),  # noqa: B008
) -> None:
    """Walk every chain (or one tenant's); report OK or the first broken entry (exit 1)."""
    settings = load_settings(DatabaseOnlySettings)
    configure_logging(settings.log_level, "console")
    reports = asyncio.run(_verify(settings.database_url, tenant))
    for report in reports:
        if report.ok:
            typer.echo(
                f"OK      tenant {report.tenant_id}: {report.entries} entries,"
                f" head {report.head_hash}"
            )
        else:
            assert report.broken is not None
            typer.echo(
                f"BROKEN  tenant {report.tenant_id} at seq {report.broken.seq}"
                f" (event {report.broken.event_id}): {report.broken.reason}"
            )
    if not reports:
        typer.echo("no chains yet")
    sys.exit(0 if all(report.ok for report in reports) else 1)


if __name__ == "__main__":
    cli()
