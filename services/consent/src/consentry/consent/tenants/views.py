"""HTTP routes of tenants: who am I calling as (thin: auth here, rules in the service)."""

from __future__ import annotations

from fastapi import APIRouter

from consentry.consent.deps import PoolDep
from consentry.consent.tenants import service
from consentry.consent.tenants.models import TenantInfo
from consentry.httpapi.auth import Authenticated
from consentry.httpapi.problems import Problem

router = APIRouter(prefix="/v1/tenant", tags=["tenants"])


@router.get("", response_model=TenantInfo)
async def get_own_tenant(principal: Authenticated, pool: PoolDep) -> TenantInfo:
    """The tenant of the calling API key (any valid key, whatever its scopes)."""
    tenant = await service.get_tenant(pool, tenant_id=principal.tenant_id)
    if tenant is None:  # only the dev key can name a tenant that does not exist
        raise Problem(403, "unknown-tenant", "The API key's tenant does not exist")
    return tenant
