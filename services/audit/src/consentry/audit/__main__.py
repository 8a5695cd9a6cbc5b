"""`python -m consentry.audit api|appender|relay|migrate|verify|replay`: the audit service's
processes and commands."""

from __future__ import annotations

import asyncio
import sys
from uuid import UUID

import asyncpg
import typer

from consentry.audit.app import create_app
from consentry.audit.chain.models import ChainReport
from consentry.audit.chain.service import verify_all, verify_tenant
from consentry.audit.settings import ApiSettings, AppenderSettings, DatabaseOnlySettings
from consentry.audit.worker import run_appender
from consentry.eventing.migrations import Migration, service_migrations
from consentry.eventing.relay import RelaySettings, run_relay
from consentry.httpapi.service import add_replay, add_worker, cli_settings, service_cli


def migrations() -> list[Migration]:
    """Every migration of the audit database."""
    return service_migrations("audit", "consentry.audit")


cli = service_cli(
    "audit",
    api_settings=ApiSettings,
    create_app=create_app,
    migrations=migrations,
    app_factory="consentry.audit.app:app_from_environment",
)


add_worker(cli, "relay", RelaySettings, run_relay, "Publish the audit topic's outbox to Kafka.")
add_worker(
    cli,
    "appender",
    AppenderSettings,
    run_appender,
    "Append every event on the audited topics to the chain.",
)
add_replay(cli)


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
    settings = cli_settings(DatabaseOnlySettings)
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
