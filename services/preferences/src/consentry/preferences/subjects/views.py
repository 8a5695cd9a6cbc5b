"""HTTP routes of a subject's preferences and contact (thin: auth and validation here).

The path carries the caller's subject identifier (e.g. a customer number or an e-mail
address); it is turned into the tenant's pseudonymous reference before anything is stored,
published or logged (the request log records route templates only).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from consentry.eventing.db import tenant_transaction
from consentry.httpapi.auth import PreferencesRead, PreferencesWrite, Principal
from consentry.preferences.deps import PoolDep, tenant_keys
from consentry.preferences.subjects import service
from consentry.preferences.subjects.models import (
    ContactIn,
    Method,
    PreferencesUpdate,
    PreferencesView,
    UnsubscribeRequest,
)

router = APIRouter(prefix="/v1/subjects/{subject_id}", tags=["preferences"])
SubjectId = Annotated[
    str, Path(min_length=1, max_length=320, description="the tenant's identifier of the person")
]


async def _ref(request: Request, principal: Principal, subject_id: str) -> str:
    keys = await tenant_keys(request, principal.tenant_id)
    return keys.subject_ref(subject_id)


@router.get("/preferences", response_model=PreferencesView)
async def get_preferences(
    request: Request, principal: PreferencesRead, pool: PoolDep, subject_id: SubjectId
) -> PreferencesView:
    """The subject's preferences over every topic (transactional topics are always on)."""
    ref = await _ref(request, principal, subject_id)
    async with tenant_transaction(pool, principal.tenant_id) as conn:
        return await service.view(conn, tenant_id=principal.tenant_id, subject_ref=ref)


@router.patch(
    "/preferences",
    response_model=PreferencesView,
    responses={409: {"description": "`marketing-consent-required`: nothing is written"}},
)
async def change_preferences(
    request: Request,
    principal: PreferencesWrite,
    pool: PoolDep,
    subject_id: SubjectId,
    update: PreferencesUpdate,
) -> PreferencesView:
    """Subscribe to or leave topics, all changes or none. Leaving a transactional topic is
    refused (422); joining a marketing topic needs the marketing-email consent (409)."""
    ref = await _ref(request, principal, subject_id)
    async with tenant_transaction(pool, principal.tenant_id) as conn:
        await service.change(
            conn,
            tenant_id=principal.tenant_id,
            subject_ref=ref,
            changes=update.changes,
            method=Method.API,
        )
        return await service.view(conn, tenant_id=principal.tenant_id, subject_ref=ref)


@router.post("/unsubscribe", response_model=PreferencesView)
async def unsubscribe(
    request: Request,
    principal: PreferencesWrite,
    pool: PoolDep,
    subject_id: SubjectId,
    body: UnsubscribeRequest,
) -> PreferencesView:
    """Leave one marketing topic, or with no topic every marketing topic; a repeat changes
    nothing. Transactional topics cannot be left (422)."""
    ref = await _ref(request, principal, subject_id)
    async with tenant_transaction(pool, principal.tenant_id) as conn:
        await service.unsubscribe(
            conn,
            tenant_id=principal.tenant_id,
            subject_ref=ref,
            topic=body.topic,
            channel=body.channel,
            method=Method.API,
        )
        return await service.view(conn, tenant_id=principal.tenant_id, subject_ref=ref)


@router.put("/contact", status_code=204, response_class=Response)
async def put_contact(
    request: Request,
    principal: PreferencesWrite,
    pool: PoolDep,
    subject_id: SubjectId,
    contact: ContactIn,
) -> Response:
    """Keep the subject's e-mail address for sending: encrypted under a key of its own, which
    erasure destroys. It is never returned in clear (list members carry it sealed for the
    tenant's sending system)."""
    keys = await tenant_keys(request, principal.tenant_id)
    ref = keys.subject_ref(subject_id)
    async with tenant_transaction(pool, principal.tenant_id) as conn:
        await service.set_contact(conn, keys=keys, subject_ref=ref, email=contact.email)
    return Response(status_code=204)


@router.delete("/contact", status_code=204, response_class=Response)
async def delete_contact(
    request: Request, principal: PreferencesWrite, pool: PoolDep, subject_id: SubjectId
) -> Response:
    """Forget the subject's e-mail address."""
    keys = await tenant_keys(request, principal.tenant_id)
    ref = keys.subject_ref(subject_id)
    async with tenant_transaction(pool, principal.tenant_id) as conn:
        await service.set_contact(conn, keys=keys, subject_ref=ref, email=None)
    return Response(status_code=204)
