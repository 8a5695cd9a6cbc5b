"""HTTP routes of API keys (scope `admin`; thin: validation and auth here, rules in the service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from consentry.consent.deps import PoolDep
from consentry.consent.keys import service
from consentry.consent.keys.models import ApiKey, ApiKeyCreate, CreatedApiKey
from consentry.httpapi.auth import Admin, CachingKeyResolver

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])

KeyId = Annotated[str, Path(min_length=1, max_length=64, description="the key id")]


@router.post("", status_code=201, response_model=CreatedApiKey)
async def create_api_key(
    principal: Admin, pool: PoolDep, body: ApiKeyCreate, response: Response
) -> CreatedApiKey:
    """Create a key for the caller's tenant. The answer holds the key: it is shown only once."""
    response.headers["Cache-Control"] = "no-store"
    return await service.issue_key(
        pool,
        tenant_id=principal.tenant_id,
        name=body.name,
        scopes=body.scopes,
        created_by_key=principal.key_id,
    )


@router.get("", response_model=list[ApiKey])
async def list_api_keys(principal: Admin, pool: PoolDep) -> list[ApiKey]:
    """The caller's tenant's keys, revoked ones too; never a secret."""
    return await service.list_keys(pool, tenant_id=principal.tenant_id)


@router.delete("/{key_id}", status_code=204, response_class=Response)
async def revoke_api_key(request: Request, principal: Admin, pool: PoolDep, key_id: KeyId) -> None:
    """Revoke a key of the caller's tenant: it is refused (401) from then on."""
    await service.revoke_key(pool, tenant_id=principal.tenant_id, key_id=key_id)
    resolver = request.app.state.key_resolver
    if isinstance(resolver, CachingKeyResolver):
        resolver.forget(key_id)  # after the commit: a reload now sees the revocation
