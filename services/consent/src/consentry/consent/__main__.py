"""`python -m consentry.consent api|relay|intake|policy-scheduler|rights|rights-tracker|migrate|
replay`: the consent service's processes.

Tenant administration: `create-tenant`, `create-api-key` and `publish-directory` (see `--help`).
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import typer
from pydantic import ValidationError

from consentry.consent.app import create_app
from consentry.consent.consents.intake import IntakeSettings, run_intake
from consentry.consent.keys.models import ApiKeyCreate, CreatedApiKey
from consentry.consent.policies.activation import run_policy_scheduler
from consentry.consent.rights.fanout import run_rights_worker
from consentry.consent.rights.tracker import run_rights_tracker
from consentry.consent.settings import (
    ApiSettings,
    PolicySchedulerSettings,
    RightsTrackerSettings,
    RightsWorkerSettings,
    TenantAdminSettings,
)
from consentry.consent.tenants.admin import create_api_key, create_tenant_with_key
from consentry.consent.tenants.events import Announced, publish_directory
from consentry.consent.tenants.service import TenantExistsError
from consentry.eventing.migrations import Migration, service_migrations
from consentry.eventing.relay import RelaySettings, run_relay
from consentry.httpapi.auth import Scope
from consentry.httpapi.service import add_replay, add_worker, cli_settings, service_cli


def migrations() -> list[Migration]:
    """Every migration of the consent database."""
    return service_migrations("consent", "consentry.consent")


cli = service_cli(
    "consent",
    api_settings=ApiSettings,
    create_app=create_app,
    migrations=migrations,
    app_factory="consentry.consent.app:app_from_environment",
)


add_worker(cli, "relay", RelaySettings, run_relay, "Publish the consent outbox to Kafka.")
add_worker(
    cli,
    "policy-scheduler",
    PolicySchedulerSettings,
    run_policy_scheduler,
    "Activate policy versions that took effect: flag consents for re-consent.",
)
add_worker(
    cli,
    "intake",
    IntakeSettings,
    run_intake,
    "Apply consent captures from the intake topic; dead-letter what the rules refuse.",
)
add_worker(
    cli,
    "rights",
    RightsWorkerSettings,
    run_rights_worker,
    "Fan rights requests out (erasing the consent service's own data) and warn of deadlines.",
)
add_worker(
    cli,
    "rights-tracker",
    RightsTrackerSettings,
    run_rights_tracker,
    "Record every service's and recipient's answer to rights requests; complete them.",
)
add_replay(cli)


def _print_key(tenant_id: uuid.UUID, key: CreatedApiKey) -> None:
    typer.echo(f"tenant_id: {tenant_id}")
    typer.echo(f"api_key_id: {key.id}")
    typer.echo(f"scopes: {' '.join(key.scopes)}")
    typer.echo(f"api_key: {key.key}")
    typer.echo("The API key is shown only now: store it (e.g. in a secret manager).", err=True)


_SCOPES_HELP = "a scope of the key (repeat for several)"


@cli.command("create-tenant")
def create_tenant_command(
    name: str = typer.Option(..., "--name", help="the customer organisation's name"),
    tenant_id: uuid.UUID | None = typer.Option(  # noqa: B008
        None, "--tenant-id", help="the tenant id (default: a new random one)"
    ),
    scopes: list[Scope] = typer.Option(  # noqa: B008
        [Scope.ADMIN], "--scope", help=_SCOPES_HELP
    ),
) -> None:
    """Create a tenant and its first API key (scope admin); print the key once."""
    settings = cli_settings(TenantAdminSettings)

    try:
        created, key = asyncio.run(
            create_tenant_with_key(settings, name=name, tenant_id=tenant_id, scopes=scopes)
        )
    except (TenantExistsError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _print_key(created, key)


@cli.command("create-api-key")
def create_api_key_command(
    tenant_id: uuid.UUID = typer.Option(..., "--tenant-id", help="the tenant"),  # noqa: B008
    name: str = typer.Option(..., "--name", help="what the key is for"),
    scopes: list[Scope] = typer.Option(..., "--scope", help=_SCOPES_HELP),  # noqa: B008
) -> None:
    """Create an API key for an existing tenant (e.g. when its admin keys are lost)."""
    settings = cli_settings(TenantAdminSettings)
    try:
        wanted = ApiKeyCreate(name=name, scopes=scopes)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(1) from None

    key = asyncio.run(
        create_api_key(settings, tenant_id=tenant_id, name=wanted.name, scopes=wanted.scopes)
    )
    if key is None:
        typer.echo(f"error: no tenant {tenant_id}", err=True)
        raise typer.Exit(1)
    _print_key(tenant_id, key)


@cli.command("publish-directory")
def publish_directory_command() -> None:
    """Announce every tenant, API key and revocation on the tenant topic again (through the
    outbox; the relay publishes them): for a service that joins later, or after the broker
    lost its data. Other services treat repeats as no-ops (docs/adr/0008-tenant-directory.md)."""
    settings = cli_settings(TenantAdminSettings)

    async def run() -> Announced:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await publish_directory(
                conn, sealer=settings.sealer(), directory=settings.directory_sealer()
            )
        finally:
            await conn.close()

    announced = asyncio.run(run())
    typer.echo(f"tenants: {announced.tenants}")
    typer.echo(f"api_keys: {announced.api_keys}")
    typer.echo(f"revocations: {announced.revocations}")


if __name__ == "__main__":
    cli()
