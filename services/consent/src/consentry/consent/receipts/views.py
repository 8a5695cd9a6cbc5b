"""HTTP routes of receipt keys: the public per-tenant JWKS, the caller's JWKS, rotation."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request, Response

from consentry.consent.deps import PoolDep
from consentry.consent.receipts import service
from consentry.consent.receipts.models import Jwks, RotatedKey
from consentry.consent.receipts.service import ReceiptSigner
from consentry.httpapi.auth import Admin, ConsentRead
from consentry.httpapi.problems import Problem

router = APIRouter(tags=["receipts"])

# Verifiers may cache a JWKS this long; on a receipt with an unknown kid they fetch again.
JWKS_MAX_AGE_SECONDS = 300


def get_signer(request: Request) -> ReceiptSigner:
    """The API's receipt signer (keys cached in memory)."""
    signer: ReceiptSigner = request.app.state.receipt_signer
    return signer


SignerDep = Annotated[ReceiptSigner, Depends(get_signer)]


@router.get("/v1/tenants/{tenant_id}/jwks.json", response_model=Jwks)
async def public_jwks(
    pool: PoolDep,
    response: Response,
    tenant_id: Annotated[UUID, Path(description="the tenant whose receipts are verified")],
) -> Jwks:
    """The tenant's receipt keys as a JWKS; public (no API key) so anyone can verify receipts
    offline. Retired keys stay listed: they verify the receipts they signed."""
    jwks = await service.public_tenant_jwks(pool, tenant_id=tenant_id)
    if jwks is None:
        raise Problem(404, "tenant-not-found", "No such tenant")
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_SECONDS}"
    return jwks


@router.get("/v1/receipt-keys", response_model=Jwks)
async def own_jwks(principal: ConsentRead, pool: PoolDep) -> Jwks:
    """The caller's tenant's receipt keys as a JWKS."""
    return await service.tenant_jwks(pool, tenant_id=principal.tenant_id)


@router.post("/v1/receipt-keys/rotate", response_model=RotatedKey)
async def rotate(principal: Admin, signer: SignerDep) -> RotatedKey:
    """Make a new receipt key active; the old one is retired but stays in the JWKS."""
    try:
        return await signer.rotate(principal.tenant_id)
    except service.UnknownTenantError:
        raise Problem(403, "unknown-tenant", "The API key's tenant does not exist") from None
