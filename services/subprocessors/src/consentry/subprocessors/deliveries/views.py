"""HTTP routes of deliveries: the recipients' acknowledgement callback (no API key: the
Standard Webhooks signature authenticates it), the Art. 19 report per rights request, and
the delivery listing (e.g. the dead-lettered ones to escalate)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request

from consentry.subprocessors.deliveries import service
from consentry.subprocessors.deliveries.models import (
    Acknowledgement,
    AcknowledgementIn,
    Delivery,
    DeliveryList,
    RequestRecipients,
    Status,
)
from consentry.subprocessors.deps import PoolDep, RulesDep, SettingsDep, TenantRead

router = APIRouter(tags=["deliveries"])
RequestId = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")]


@router.post(
    "/v1/acknowledgements",
    response_model=Acknowledgement,
    responses={
        401: {
            "description": "`invalid-signature` or `stale-timestamp`: not signed with the "
            "recipient's secret, or signed outside the tolerance"
        },
        404: {"description": "`delivery-not-found`: no delivery has this webhook id"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": AcknowledgementIn.model_json_schema()}},
        }
    },
)
async def acknowledge(
    request: Request, pool: PoolDep, rules: RulesDep, settings: SettingsDep
) -> Acknowledgement:
    """A recipient confirms a notice. Signed the Standard Webhooks way with the recipient's
    secret (`webhook-id` a new id, `webhook-timestamp`, `webhook-signature` over the exact
    body); nothing else authenticates it. Repeating it changes nothing."""
    return await service.acknowledge(
        pool,
        rules.sealer,
        body=await request.body(),
        headers=dict(request.headers),
        tolerance_seconds=settings.ack_tolerance_seconds,
    )


@router.get("/v1/requests/{request_id}/recipients", response_model=RequestRecipients)
async def request_recipients(
    principal: TenantRead,
    pool: PoolDep,
    request_id: RequestId,
    subject_ref: Annotated[
        str | None,
        Query(pattern=r"^[0-9a-f]{64}$", description="only this subject of a bulk request"),
    ] = None,
) -> RequestRecipients:
    """Who we told about the rights request, when, and who confirmed (GDPR Art. 19)."""
    return await service.request_recipients(
        pool, tenant_id=principal.tenant_id, request_id=request_id, subject_ref=subject_ref
    )


@router.get("/v1/deliveries", response_model=DeliveryList)
async def list_deliveries(
    principal: TenantRead,
    pool: PoolDep,
    status: Annotated[Status | None, Query(description="e.g. dead_lettered")] = None,
    request_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    recipient_id: UUID | None = None,
    after: Annotated[UUID | None, Query(description="`next_after` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryList:
    """The tenant's deliveries, oldest first; `status=dead_lettered` is the escalation list."""
    return await service.list_deliveries(
        pool,
        tenant_id=principal.tenant_id,
        status=status,
        request_id=request_id,
        recipient_id=recipient_id,
        after=after,
        limit=limit,
    )


@router.get("/v1/deliveries/{delivery_id}", response_model=Delivery)
async def get_delivery(principal: TenantRead, pool: PoolDep, delivery_id: UUID) -> Delivery:
    """One delivery of the tenant."""
    return await service.get_delivery(pool, tenant_id=principal.tenant_id, delivery=delivery_id)
