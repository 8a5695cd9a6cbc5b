"""HTTP routes of checks: one pair by GET, up to 10,000 pairs by POST."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from consentry.consent.checks import service
from consentry.consent.checks.models import BatchCheckIn, BatchCheckOut, CheckResult
from consentry.consent.consents.models import PURPOSE_PATTERN
from consentry.consent.deps import PoolDep, subject_key_for, subject_ref_for
from consentry.consent.tenants.service import pseudonymise
from consentry.httpapi.auth import ConsentRead

router = APIRouter(tags=["checks"])


@router.get("/v1/subjects/{subject_id}/checks/{purpose}", response_model=CheckResult)
async def check(
    request: Request,
    principal: ConsentRead,
    pool: PoolDep,
    subject_id: Annotated[str, Path(min_length=1, max_length=320)],
    purpose: Annotated[str, Path(pattern=PURPOSE_PATTERN)],
) -> CheckResult:
    """May this subject's data be used for `purpose` now? Reads current state only."""
    subject_ref, _ = await subject_ref_for(request, principal, subject_id)
    rules = await request.app.state.policies.get(principal.tenant_id)
    return await service.check_one(
        pool,
        rules.requires_consent,
        tenant_id=principal.tenant_id,
        subject_ref=subject_ref,
        purpose=purpose,
    )


@router.post("/v1/checks", response_model=BatchCheckOut)
async def check_batch(
    request: Request, principal: ConsentRead, pool: PoolDep, body: BatchCheckIn
) -> BatchCheckOut:
    """Check up to 10,000 subject-purpose pairs; one result per pair, in order."""
    key = await subject_key_for(request, principal)
    pairs = [
        (item.subject_ref or pseudonymise(key, item.subject_id or ""), item.purpose)
        for item in body.checks
    ]
    rules = await request.app.state.policies.get(principal.tenant_id)
    results = await service.check_many(
        pool, rules.requires_consent, tenant_id=principal.tenant_id, pairs=pairs
    )
    return BatchCheckOut(results=results)
