"""HTTP routes of the recipient registry (thin: auth and validation here, rules in the
service). Answers that carry a signing secret are marked `Cache-Control: no-store`."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response

from consentry.subprocessors.deps import PoolDep, RulesDep, TenantAdmin, TenantRead
from consentry.subprocessors.recipients import service
from consentry.subprocessors.recipients.models import (
    CreatedRecipient,
    Recipient,
    RecipientIn,
    RecipientList,
    RecipientPatch,
    RotatedSecret,
)

router = APIRouter(prefix="/v1/recipients", tags=["recipients"])
RecipientId = Annotated[UUID, Path(description="the recipient's id")]

_NAME_TAKEN: dict[int | str, dict[str, Any]] = {
    409: {"description": "`recipient-name-taken`: the tenant has a recipient of this name"}
}


@router.post("", status_code=201, response_model=CreatedRecipient, responses=_NAME_TAKEN)
async def create_recipient(
    principal: TenantAdmin,
    pool: PoolDep,
    rules: RulesDep,
    body: RecipientIn,
    response: Response,
) -> CreatedRecipient:
    """Register a recipient. The answer holds its signing secret: shown only this once."""
    response.headers["Cache-Control"] = "no-store"
    return await service.create(pool, rules, tenant_id=principal.tenant_id, body=body)


@router.get("", response_model=RecipientList)
async def list_recipients(
    principal: TenantRead,
    pool: PoolDep,
    active: Annotated[bool | None, Query(description="only active (or inactive) ones")] = None,
) -> RecipientList:
    """The tenant's recipients, oldest first."""
    return RecipientList(
        recipients=await service.list_recipients(pool, tenant_id=principal.tenant_id, active=active)
    )


@router.get("/{recipient_id}", response_model=Recipient)
async def get_recipient(
    principal: TenantRead, pool: PoolDep, recipient_id: RecipientId
) -> Recipient:
    """One recipient of the tenant."""
    return await service.get(pool, tenant_id=principal.tenant_id, recipient_id=recipient_id)


@router.patch("/{recipient_id}", response_model=Recipient, responses=_NAME_TAKEN)
async def change_recipient(
    principal: TenantAdmin,
    pool: PoolDep,
    rules: RulesDep,
    recipient_id: RecipientId,
    patch: RecipientPatch,
) -> Recipient:
    """Change the given fields; `active: true` reactivates a deactivated recipient."""
    return await service.change(
        pool, rules, tenant_id=principal.tenant_id, recipient_id=recipient_id, patch=patch
    )


@router.delete("/{recipient_id}", response_model=Recipient)
async def deactivate_recipient(
    principal: TenantAdmin, pool: PoolDep, rules: RulesDep, recipient_id: RecipientId
) -> Recipient:
    """Deactivate a recipient: no new notices; those under way are still delivered, and
    everything it was told stays on record."""
    return await service.deactivate(
        pool, rules, tenant_id=principal.tenant_id, recipient_id=recipient_id
    )


@router.post("/{recipient_id}/rotate-secret", response_model=RotatedSecret)
async def rotate_secret(
    principal: TenantAdmin,
    pool: PoolDep,
    rules: RulesDep,
    recipient_id: RecipientId,
    response: Response,
) -> RotatedSecret:
    """A new signing secret (shown only this once); the previous one stays valid for the
    grace period."""
    response.headers["Cache-Control"] = "no-store"
    return await service.rotate_secret(
        pool, rules, tenant_id=principal.tenant_id, recipient_id=recipient_id
    )
