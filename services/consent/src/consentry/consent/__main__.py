"""`python -m consentry.consent api|relay|migrate`: the consent service's processes."""

from __future__ import annotations

import asyncio

import typer

from consentry.consent.settings import ApiSettings, MigrateSettings, RelaySettings
from consentry.eventing.logs import configure_logging
from consentry.eventing.migrations import Migration, eventing_migrations, load, migrate_dsn
from consentry.eventing.process import run_worker
from consentry.eventing.settings import load_settings

cli = typer.Typer(help="consentry consent service", no_args_is_help=True, add_completion=False)


def migrations() -> list[Migration]:
    """Every migration of the consent database, shared eventing tables first."""
    return [*eventing_migrations(), *load("consent", "consentry.consent")]


@cli.command()
def api() -> None:
    """Serve the consent HTTP API."""
    from consentry.consent.app import create_app
    from consentry.httpapi.server import serve

    settings = load_settings(ApiSettings)
    configure_logging(settings.log_level, settings.log_format)
    serve(create_app(settings), settings)


@cli.command()
def relay() -> None:
    """Publish the consent outbox to Kafka."""
    from consentry.consent.worker import run_relay

    settings = load_settings(RelaySettings)
    configure_logging(settings.log_level, settings.log_format)
    run_worker(lambda stop: run_relay(settings, stop))


@cli.command()
def migrate() -> None:
    """Apply the consent database's migrations."""
    settings = load_settings(MigrateSettings)
    configure_logging(settings.log_level, settings.log_format)
    applied = asyncio.run(migrate_dsn(settings.database_url, migrations()))
    typer.echo(f"consent database: {len(applied)} migration(s) applied")


if __name__ == "__main__":
    cli()
