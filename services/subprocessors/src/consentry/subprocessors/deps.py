"""FastAPI dependencies of the subprocessors API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from consentry.eventing.db import Pool
from consentry.httpapi.auth import Principal, Scope, require
from consentry.httpapi.problems import tenant_not_provisioned
from consentry.subprocessors.directory.tenants import KnownTenants
from consentry.subprocessors.recipients.service import RecipientRules
from consentry.subprocessors.settings import ApiSettings


async def get_pool(request: Request) -> Pool:
    """The service's database pool."""
    pool: Pool = request.app.state.pool
    return pool


async def get_rules(request: Request) -> RecipientRules:
    """The registry's rules built from the API settings."""
    rules: RecipientRules = request.app.state.rules
    return rules


async def get_settings(request: Request) -> ApiSettings:
    """The API process's settings."""
    settings: ApiSettings = request.app.state.settings
    return settings


def provisioned(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: a valid key with `scope` (as `require`), of a tenant the tenant
    directory has brought here; 503 `tenant-not-provisioned` (Retry-After) until it has."""
    authorised = require(scope)

    async def dependency(request: Request) -> Principal:
        principal = await authorised(request)
        tenants: KnownTenants = request.app.state.tenants
        if not await tenants.known(principal.tenant_id):
            raise tenant_not_provisioned()
        return principal

    dependency.scope = authorised.scope  # type: ignore[attr-defined]
    return dependency


PoolDep = Annotated[Pool, Depends(get_pool)]
RulesDep = Annotated[RecipientRules, Depends(get_rules)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
# The key's scope, and its tenant provisioned here (every route but the acknowledgement).
TenantRead = Annotated[Principal, Depends(provisioned(Scope.SUBPROCESSORS_READ))]
TenantAdmin = Annotated[Principal, Depends(provisioned(Scope.SUBPROCESSORS_ADMIN))]
