"""HTTP routes of purposes (thin: validation and auth here, rules in the service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from consentry.consent.consents.models import PURPOSE_PATTERN
from consentry.consent.deps import PoolDep
from consentry.consent.policies.catalogue import policy_cache
from consentry.consent.purposes import service
from consentry.consent.purposes.models import PurposeIn, PurposeList, PurposeOut
from consentry.httpapi.auth import ConsentRead, Principal, require

router = APIRouter(prefix="/v1/purposes", tags=["purposes"])

# The tenants work adds `PolicyAdmin` to consentry.httpapi.auth; until then, the same thing.
PolicyAdmin = Annotated[Principal, Depends(require("policy:admin"))]
PurposeName = Annotated[str, Path(pattern=PURPOSE_PATTERN, description="e.g. performance")]


@router.get("", response_model=PurposeList)
async def list_purposes(principal: ConsentRead, pool: PoolDep) -> PurposeList:
    """The tenant's purposes: legal basis, whether consent is needed, whether always on."""
    return PurposeList(purposes=await service.list_purposes(pool, tenant_id=principal.tenant_id))


@router.get("/{name}", response_model=PurposeOut)
async def get_purpose(principal: ConsentRead, pool: PoolDep, name: PurposeName) -> PurposeOut:
    """One purpose of the tenant."""
    return await service.get_purpose(pool, tenant_id=principal.tenant_id, name=name)


@router.put(
    "/{name}",
    response_model=PurposeOut,
    responses={201: {"model": PurposeOut, "description": "created"}},
)
async def put_purpose(
    request: Request,
    response: Response,
    principal: PolicyAdmin,
    pool: PoolDep,
    name: PurposeName,
    purpose: PurposeIn,
) -> PurposeOut:
    """Create (201) or update (200) a purpose; `required` stays always on."""
    result, created = await service.put_purpose(
        pool, tenant_id=principal.tenant_id, name=name, purpose=purpose
    )
    policy_cache(request).invalidate(principal.tenant_id)
    if created:
        response.status_code = 201
    return result
