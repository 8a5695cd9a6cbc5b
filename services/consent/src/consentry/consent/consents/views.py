"""HTTP routes of consents (thin: validation and auth here, rules in the service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request

from consentry.consent.consents import service
from consentry.consent.consents.capture import CaptureOutcome
from consentry.consent.consents.models import (
    PURPOSE_PATTERN,
    CaptureResult,
    ConsentCaptureIn,
    ConsentDecisionIn,
    ConsentStatus,
    RecordedConsent,
    SubjectConsents,
    SubjectProof,
    SubjectRefsIn,
    SubjectRefsOut,
)
from consentry.consent.consents.writer import CaptureWriter
from consentry.consent.deps import PoolDep, subject_key_for, subject_ref_for
from consentry.consent.tenants.service import pseudonymise_many
from consentry.httpapi.auth import ConsentRead, ConsentWrite, Principal
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
GpcHeader = Annotated[
    str | None,
    Header(
        alias="Sec-GPC",
        description="Global Privacy Control: `1` withdraws targeting and joint-marketing",
    ),
]


async def _record(
    request: Request,
    principal: Principal,
    subject_id: str,
    purposes: dict[str, ConsentStatus],
    context: ConsentDecisionIn | ConsentCaptureIn,
    sec_gpc: str | None,
) -> tuple[str, CaptureOutcome, str]:
    if not subject_id.strip():
        raise Problem(422, "validation-error", "The request is not valid", "subject_id is blank")
    subject_ref, subject_key = await subject_ref_for(request, principal, subject_id)
    rules = await request.app.state.policies.get(principal.tenant_id)
    capture = service.prepare_capture(
        rules,
        tenant_id=principal.tenant_id,
        subject_ref=subject_ref,
        purposes=purposes,
        context=context,
        gpc_signal=(sec_gpc or "").strip() == "1",
        fingerprint=service.client_fingerprint(subject_key, context.client),
    )
    writer: CaptureWriter = request.app.state.capture_writer
    outcome = await writer.submit(capture)
    receipt = await request.app.state.receipt_issuer.issue(outcome)
    return subject_ref, outcome, receipt


@router.put(
    "/{subject_id}/consents/{purpose}",
    response_model=RecordedConsent,
    responses={422: {"description": "refused: see the problem `type` (docs/problems.md)"}},
)
async def put_consent(
    request: Request,
    principal: ConsentWrite,
    subject_id: SubjectId,
    purpose: PurposeName,
    decision: ConsentDecisionIn,
    sec_gpc: GpcHeader = None,
) -> RecordedConsent:
    """Give or withdraw the subject's consent for one purpose; returns a signed receipt.

    Repeating the current decision records nothing new. With a GPC signal, targeting and
    joint-marketing are recorded as withdrawn (method `gpc`) whatever was asked for them.
    """
    _, outcome, receipt = await _record(
        request, principal, subject_id, {purpose: decision.status}, decision, sec_gpc
    )
    state = next((s for s in outcome.states if s.purpose == purpose), outcome.states[0])
    return RecordedConsent(
        **state.model_dump(), receipt=receipt, receipt_id=outcome.capture.receipt_id
    )


@router.post(
    "/{subject_id}/consents",
    response_model=CaptureResult,
    responses={422: {"description": "refused: see the problem `type` (docs/problems.md)"}},
)
async def post_consents(
    request: Request,
    principal: ConsentWrite,
    subject_id: SubjectId,
    capture: ConsentCaptureIn,
    sec_gpc: GpcHeader = None,
) -> CaptureResult:
    """Record decisions for several purposes at once (e.g. a cookie banner's choices).

    All of them are recorded, or none; one signed receipt covers them.
    """
    subject_ref, outcome, receipt = await _record(
        request, principal, subject_id, dict(capture.purposes), capture, sec_gpc
    )
    return CaptureResult(
        subject_ref=subject_ref,
        subject_version=outcome.subject_version,
        consents=list(outcome.states),
        gpc_applied=outcome.capture.gpc,
        receipt=receipt,
        receipt_id=outcome.capture.receipt_id,
    )


@router.get("/{subject_id}/consents", response_model=SubjectConsents)
async def get_consents(
    request: Request, principal: ConsentRead, pool: PoolDep, subject_id: SubjectId
) -> SubjectConsents:
    """The subject's current consent for every purpose they decided on."""
    subject_ref, _ = await subject_ref_for(request, principal, subject_id)
    result = await service.list_consents(
        pool, tenant_id=principal.tenant_id, subject_ref=subject_ref
    )
    if result is None:
        raise Problem(404, "subject-not-found", "No consent is recorded for this subject")
    return result


@router.get("/{subject_id}/proof", response_model=SubjectProof)
async def get_proof(
    request: Request, principal: ConsentRead, pool: PoolDep, subject_id: SubjectId
) -> SubjectProof:
    """Proof of consent: every decision ever recorded, oldest first, with policy version,
    method, source, time, GPC flag, client fingerprint and receipt id."""
    subject_ref, _ = await subject_ref_for(request, principal, subject_id)
    result = await service.proof(pool, tenant_id=principal.tenant_id, subject_ref=subject_ref)
    if result is None:
        raise Problem(404, "subject-not-found", "No consent is recorded for this subject")
    return result


refs_router = APIRouter(tags=["consents"])


@refs_router.post("/v1/subject-refs", response_model=SubjectRefsOut)
async def subject_refs(
    request: Request, principal: ConsentWrite, body: SubjectRefsIn
) -> SubjectRefsOut:
    """The pseudonymous references of up to 10,000 subject ids, in order (what producers of
    intake events put in `subject_ref`; a reference never changes, so it can be cached)."""
    key = await subject_key_for(request, principal)
    return SubjectRefsOut(subject_refs=pseudonymise_many(key, body.subject_ids))
