"""HTTP routes of rights requests (thin: validation and auth here, rules in the service)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from consentry.consent.deps import PoolDep, subject_key_for
from consentry.consent.rights import export, service
from consentry.consent.rights.models import (
    DeadlineFilter,
    ExportLinkOut,
    ExtensionIn,
    IdentityIn,
    RejectionIn,
    RequestState,
    RightsRequestIn,
    RightsRequestList,
    RightsRequestOut,
)
from consentry.consent.rights.service import ErasurePolicy
from consentry.consent.sealing import Sealer
from consentry.consent.tenants.service import pseudonymise_many
from consentry.httpapi.auth import RightsRead, RightsWrite
from consentry.httpapi.problems import Problem

router = APIRouter(prefix="/v1/rights-requests", tags=["rights requests"])
exports_router = APIRouter(prefix="/v1/rights-exports", tags=["rights requests"])

RequestId = Annotated[UUID, Path(description="the rights request")]
# Pseudonymising this many identifiers takes long enough to be worth a thread.
_THREAD_ABOVE = 1000
_REFUSALS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such request (also another tenant's): `rights-request-not-found`"},
    409: {"description": "the request is closed, or not in a state that allows this"},
    422: {"description": "refused: see the problem `type` (docs/problems.md)"},
}


def _sealer(request: Request) -> Sealer:
    sealer: Sealer = request.app.state.sealer
    return sealer


@router.post("", response_model=RightsRequestOut, status_code=202, responses=_REFUSALS)
async def file_request(
    request: Request, principal: RightsWrite, pool: PoolDep, body: RightsRequestIn
) -> RightsRequestOut:
    """File a rights request, accepted for processing in the background.

    A subject's request waits for identity verification (`received`, the clock paused); a
    tenant's request is in progress at once and may name up to 100,000 subjects.
    """
    key = await subject_key_for(request, principal)
    names = body.subjects
    if len(names) > _THREAD_ABOVE:
        refs = await asyncio.to_thread(pseudonymise_many, key, names)
    else:
        refs = pseudonymise_many(key, names)
    erasure: ErasurePolicy = request.app.state.erasure_policy
    return await service.create_request(
        pool,
        tenant_id=principal.tenant_id,
        body=body,
        subject_refs=refs,
        sealer=_sealer(request),
        erasure=erasure,
        wake=request.app.state.rights_waker.wake,
    )


@router.get("", response_model=RightsRequestList)
async def list_requests(
    principal: RightsRead,
    pool: PoolDep,
    deadline: Annotated[
        DeadlineFilter, Query(description="overdue, due-soon (5 days or less) or all")
    ] = DeadlineFilter.ALL,
    state: Annotated[RequestState | None, Query(description="only requests in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = service.DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> RightsRequestList:
    """The tenant's requests by due instant (earliest first), filtered by deadline and state."""
    return await service.list_requests(
        pool,
        tenant_id=principal.tenant_id,
        deadline=deadline,
        state=state,
        limit=limit,
        cursor=cursor,
    )


@router.get("/{request_id}", response_model=RightsRequestOut, responses=_REFUSALS)
async def get_request(
    request: Request, principal: RightsRead, pool: PoolDep, request_id: RequestId
) -> RightsRequestOut:
    """The request: state, deadline, per-service and per-recipient progress, certificate."""
    return await service.get_request(
        pool, tenant_id=principal.tenant_id, request_id=request_id, sealer=_sealer(request)
    )


@router.post("/{request_id}/identity", response_model=RightsRequestOut, responses=_REFUSALS)
async def verify_identity(
    request: Request, principal: RightsWrite, pool: PoolDep, request_id: RequestId, body: IdentityIn
) -> RightsRequestOut:
    """Record the identity verification of a subject's request: the clock resumes; verified
    requests go in progress, others are rejected with the reason."""
    return await service.verify_identity(
        pool,
        tenant_id=principal.tenant_id,
        request_id=request_id,
        body=body,
        sealer=_sealer(request),
        wake=request.app.state.rights_waker.wake,
    )


@router.post("/{request_id}/extend", response_model=RightsRequestOut, responses=_REFUSALS)
async def extend(
    request: Request,
    principal: RightsWrite,
    pool: PoolDep,
    request_id: RequestId,
    body: ExtensionIn,
) -> RightsRequestOut:
    """Extend the deadline once by 1 or 2 months, with a reason, after telling the requester
    (both before the first month ends)."""
    return await service.extend(
        pool,
        tenant_id=principal.tenant_id,
        request_id=request_id,
        body=body,
        sealer=_sealer(request),
    )


@router.post("/{request_id}/reject", response_model=RightsRequestOut, responses=_REFUSALS)
async def reject(
    request: Request,
    principal: RightsWrite,
    pool: PoolDep,
    request_id: RequestId,
    body: RejectionIn,
) -> RightsRequestOut:
    """Reject the request with a reason (not an erasure that has begun)."""
    return await service.reject(
        pool,
        tenant_id=principal.tenant_id,
        request_id=request_id,
        body=body,
        sealer=_sealer(request),
    )


@router.post("/{request_id}/complete", response_model=RightsRequestOut, responses=_REFUSALS)
async def complete(
    request: Request, principal: RightsWrite, pool: PoolDep, request_id: RequestId
) -> RightsRequestOut:
    """Complete a correction or access request the tenant has answered; the answer carries
    the signed completion certificate. Erasures complete by themselves."""
    return await service.complete_manually(
        pool,
        tenant_id=principal.tenant_id,
        request_id=request_id,
        signer=request.app.state.receipt_signer,
        sealer=_sealer(request),
    )


@router.get("/{request_id}/export", response_model=ExportLinkOut, responses=_REFUSALS)
async def export_link(
    request: Request, principal: RightsRead, pool: PoolDep, request_id: RequestId
) -> ExportLinkOut:
    """A link to the export of a completed access request, valid for 15 minutes."""
    links: export.ExportLinks = request.app.state.export_links
    token, expires_at = await export.issue_link(
        pool, links, tenant_id=principal.tenant_id, request_id=request_id, now=datetime.now(UTC)
    )
    return ExportLinkOut(url=f"{exports_router.prefix}/{token}", expires_at=expires_at)


@exports_router.get(
    "/{token}",
    responses={
        404: {"description": "`export-link-invalid`: malformed, forged or altered"},
        410: {"description": "`export-link-expired`"},
    },
)
async def download_export(
    request: Request,
    pool: PoolDep,
    token: Annotated[str, Path(max_length=200, description="from GET …/{request_id}/export")],
) -> JSONResponse:
    """The access export (JSON): every service's part for every subject. No API key: the
    signed, short-lived link is the authorisation."""
    links: export.ExportLinks = request.app.state.export_links
    now = datetime.now(UTC)
    try:
        tenant_id, request_id = links.check(token, now)
    except export.LinkExpiredError:
        raise Problem(410, "export-link-expired", "The link has expired") from None
    except export.LinkError:
        raise Problem(404, "export-link-invalid", "No export at this link") from None
    body = await export.build_export(
        pool, tenant_id=tenant_id, request_id=request_id, sealer=_sealer(request), now=now
    )
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
