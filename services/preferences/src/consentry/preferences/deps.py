"""FastAPI dependencies of the preferences API."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request

from consentry.eventing.db import Pool
from consentry.httpapi.problems import tenant_not_provisioned
from consentry.preferences.tenants import TenantKeyring, TenantKeys


async def get_pool(request: Request) -> Pool:
    """The service's database pool."""
    pool: Pool = request.app.state.pool
    return pool


async def tenant_keys(request: Request, tenant_id: UUID) -> TenantKeys:
    """The tenant's secrets; 503 while the tenant directory has not announced the tenant yet."""
    keyring: TenantKeyring = request.app.state.keyring
    keys = await keyring.get(tenant_id)
    if keys is None:
        raise tenant_not_provisioned()
    return keys


PoolDep = Annotated[Pool, Depends(get_pool)]
