"""HTTP routes of consents (thin: validation and auth here, rules in the service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from consentry.consent.consents import service
from consentry.consent.consents.models import (
    PURPOSE_PATTERN,
    ConsentDecisionIn,
    ConsentState,
    SubjectConsents,
)
from consentry.consent.deps import PoolDep, subject_ref_for
from consentry.httpapi.auth import ConsentRead, ConsentWrite
from consentry.httpapi.problems import Problem

router = APIRouter(prefix="/v1/subjects", tags=["consents"])

SubjectId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=320,
        description="the caller's identifier of the subject (e.g. user id or e-mail); "
        "stored and published only as a pseudonymous reference",
    ),
]
PurposeName = Annotated[str, Path(pattern=PURPOSE_PATTERN, description="purpose, e.g. performance")]


@router.put("/{subject_id}/consents/{purpose}", response_model=ConsentState)
async def put_consent(
    request: Request,
    principal: ConsentWrite,
    pool: PoolDep,
    subject_id: SubjectId,
    purpose: PurposeName,
    decision: ConsentDecisionIn,
) -> ConsentState:
    """Give or withdraw the subject's consent for one purpose."""
    if not subject_id.strip():
        raise Problem(422, "validation-error", "The request is not valid", "subject_id is blank")
    subject_ref = await subject_ref_for(request, principal, subject_id)
    return await service.record_decision(
        pool,
        tenant_id=principal.tenant_id,
        subject_ref=subject_ref,
        purpose=purpose,
        decision=decision,
    )


@router.get("/{subject_id}/consents", response_model=SubjectConsents)
async def get_consents(
    request: Request, principal: ConsentRead, pool: PoolDep, subject_id: SubjectId
) -> SubjectConsents:
    """The subject's current consent for every purpose they decided on."""
    subject_ref = await subject_ref_for(request, principal, subject_id)
    result = await service.list_consents(
        pool, tenant_id=principal.tenant_id, subject_ref=subject_ref
    )
    if result is None:
        raise Problem(404, "subject-not-found", "No consent is recorded for this subject")
    return result
