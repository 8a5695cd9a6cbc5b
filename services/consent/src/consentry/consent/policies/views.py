"""HTTP routes of policy versions (thin: validation and auth here, rules in the service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from consentry.consent.deps import PoolDep
from consentry.consent.policies import service
from consentry.consent.policies.catalogue import policy_cache
from consentry.consent.policies.models import PolicyVersionIn, PolicyVersionList, PolicyVersionOut
from consentry.httpapi.auth import ConsentRead, Principal, require

router = APIRouter(prefix="/v1/policy-versions", tags=["policy versions"])

# The tenants work adds `PolicyAdmin` to consentry.httpapi.auth; until then, the same thing.
PolicyAdmin = Annotated[Principal, Depends(require("policy:admin"))]
VersionId = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="e.g. 2026-09")
]


@router.post(
    "",
    response_model=PolicyVersionOut,
    status_code=201,
    responses={
        409: {"description": "`policy-version-exists` or `tenant-calendar-invalid`"},
        422: {"description": "refused: see the problem `type` (docs/problems.md)"},
    },
)
async def publish_version(
    request: Request, principal: PolicyAdmin, pool: PoolDep, version: PolicyVersionIn
) -> PolicyVersionOut:
    """Publish (announce) a policy version. A version that changes purposes must take effect
    at least 30 working days after today (tenant's holiday country); the first is immediate."""
    published = await service.publish_version(pool, tenant_id=principal.tenant_id, version=version)
    policy_cache(request).invalidate(principal.tenant_id)
    return published


@router.get("", response_model=PolicyVersionList)
async def list_versions(principal: ConsentRead, pool: PoolDep) -> PolicyVersionList:
    """The tenant's policy versions by effective day: state, changed purposes, notices."""
    return await service.list_versions(pool, tenant_id=principal.tenant_id)


@router.get("/{version}", response_model=PolicyVersionOut)
async def get_version(
    principal: ConsentRead, pool: PoolDep, version: VersionId
) -> PolicyVersionOut:
    """One policy version of the tenant."""
    return await service.get_version(pool, tenant_id=principal.tenant_id, version=version)
