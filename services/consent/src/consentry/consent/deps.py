"""FastAPI dependencies of the consent API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from consentry.consent.tenants.service import SubjectKeys, pseudonymise
from consentry.eventing.db import Pool
from consentry.httpapi.auth import Principal
from consentry.httpapi.problems import Problem


async def get_pool(request: Request) -> Pool:
    """The service's database pool (async: a plain function would run in a thread pool)."""
    pool: Pool = request.app.state.pool
    return pool


async def subject_key_for(request: Request, principal: Principal) -> bytes:
    """The caller's tenant's subject key (unsealed, cached); 403 for a tenant that is missing."""
    keys: SubjectKeys = request.app.state.subject_keys
    key = await keys.get(principal.tenant_id)
    if key is None:  # only the dev key can name a tenant that was never created
        raise Problem(403, "unknown-tenant", "The API key's tenant does not exist")
    return key


async def subject_ref_for(
    request: Request, principal: Principal, subject_id: str
) -> tuple[str, bytes]:
    """The tenant's pseudonymous reference of the caller's subject identifier, and the key."""
    key = await subject_key_for(request, principal)
    return pseudonymise(key, subject_id), key


PoolDep = Annotated[Pool, Depends(get_pool)]
