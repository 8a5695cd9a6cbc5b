"""`consentry tenant create` and `consentry key create`: operator commands on the consent
service's database (its owner's DSN, the master key and the directory key, as the service's
own `create-tenant` / `create-api-key`), through the consent service's own functions: the
tenant is sealed, seeded and announced on the tenant topic exactly as the service does it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import typer
from pydantic import ValidationError

from consentry.cli.config import load, state
from consentry.cli.output import (
    CliError,
    ExitCode,
    JsonOption,
    Output,
    handle_errors,
    validation_reasons,
)
from consentry.consent.keys.models import ApiKeyCreate, CreatedApiKey
from consentry.consent.settings import TenantAdminSettings
from consentry.consent.tenants.admin import create_api_key, create_tenant_with_key
from consentry.consent.tenants.service import TenantExistsError
from consentry.httpapi.auth import Scope

tenant_app = typer.Typer(
    help="Tenants (on the consent service's database: for operators).", no_args_is_help=True
)
key_app = typer.Typer(
    help="API keys (on the consent service's database: for operators).", no_args_is_help=True
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="the consent service's database as its owner (default: CONSENTRY_DATABASE_URL)",
        show_default=False,
    ),
]
Scopes = Annotated[list[Scope], typer.Option("--scope", help="a scope of the key (repeatable)")]


def admin_settings(database_url: str | None) -> TenantAdminSettings:
    """The consent service's tenant-administration settings, `--database-url` on top."""
    overrides = {"database_url": database_url} if database_url else {}
    return load(TenantAdminSettings, **overrides)


@tenant_app.command("create")
@handle_errors
def create_tenant_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="the customer organisation's name")],
    tenant_id: Annotated[
        uuid.UUID | None, typer.Option("--tenant-id", help="the tenant id (default: a new one)")
    ] = None,
    scopes: Scopes = [Scope.ADMIN],  # noqa: B006 - typer reads the default, never mutates it
    database_url: DatabaseUrl = None,
    as_json: JsonOption = False,
) -> None:
    """Create a tenant and its first API key (scope admin by default); the key is shown once."""
    settings = admin_settings(database_url)

    try:
        created, key = asyncio.run(
            create_tenant_with_key(settings, name=name, tenant_id=tenant_id, scopes=scopes)
        )
    except (TenantExistsError, ValueError) as exc:
        raise CliError(str(exc)) from None
    output = state(ctx, as_json=as_json).output
    show_key(output, created, key)


@key_app.command("create")
@handle_errors
def create_key_command(
    ctx: typer.Context,
    tenant_id: Annotated[uuid.UUID, typer.Option("--tenant-id", help="the tenant")],
    name: Annotated[str, typer.Option("--name", help="what the key is for")],
    scopes: Scopes,
    database_url: DatabaseUrl = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key for an existing tenant (e.g. when its admin keys are lost)."""
    try:
        wanted = ApiKeyCreate(name=name, scopes=scopes)
    except ValidationError as exc:
        raise CliError(validation_reasons(exc), ExitCode.USAGE) from None
    settings = admin_settings(database_url)

    key = asyncio.run(
        create_api_key(settings, tenant_id=tenant_id, name=wanted.name, scopes=wanted.scopes)
    )
    if key is None:
        raise CliError(f"no tenant {tenant_id}")
    output = state(ctx, as_json=as_json).output
    show_key(output, tenant_id, key)


def show_key(output: Output, tenant_id: uuid.UUID, key: CreatedApiKey) -> None:
    """The new key and its tenant; the key itself is never stored, so say so."""
    document = {
        "tenant_id": str(tenant_id),
        "api_key_id": key.id,
        "scopes": [str(scope) for scope in key.scopes],
        "api_key": key.key,
    }
    output.result(document, lambda: output.fields(document, title="API key created"))
    output.note("The API key is shown only now: store it (e.g. in a secret manager).")
