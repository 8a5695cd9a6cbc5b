"""HTTP routes of checks: one pair by GET, up to 10,000 pairs by POST."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from consentry.consent.checks import service
from consentry.consent.checks.models import BatchCheckIn, BatchCheckOut, CheckResult
from consentry.consent.consents.models import PURPOSE_PATTERN
from consentry.consent.deps import PoolDep, subject_key_for, subject_ref_for
from consentry.consent.tenants.service import pseudonymise_many
from consentry.httpapi.auth import ConsentRead
from consentry.httpapi.problems import Problem

router = APIRouter(tags=["checks"])

# The few distinct answers, serialised once: a batch answer is these fragments joined.
_FRAGMENTS = {id(result): result.model_dump_json().encode() for result in service.RESULTS}


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


@router.post(
    "/v1/checks",
    response_model=None,
    responses={200: {"model": BatchCheckOut, "description": "one result per pair, in order"}},
)
async def check_batch(
    request: Request, principal: ConsentRead, pool: PoolDep, body: BatchCheckIn
) -> Response:
    """Check up to 10,000 subject-purpose pairs; one result per pair, in order."""
    wrong = [
        n
        for n, item in enumerate(body.checks)
        if (item.subject_id is None) == (item.subject_ref is None)
    ]
    if wrong:
        raise Problem(
            422,
            "validation-error",
            "The request is not valid",
            "each check gives exactly one of subject_id and subject_ref",
            errors=[
                {"location": ["body", "checks", str(n)], "message": "exactly one subject field"}
                for n in wrong[:20]
            ],
        )
    key = await subject_key_for(request, principal)
    by_id = [item.subject_id for item in body.checks if item.subject_ref is None]
    computed = iter(pseudonymise_many(key, (value or "" for value in by_id)))
    pairs = [(item.subject_ref or next(computed), item.purpose) for item in body.checks]
    rules = await request.app.state.policies.get(principal.tenant_id)
    results = await service.check_many(
        pool, rules.requires_consent, tenant_id=principal.tenant_id, pairs=pairs
    )
    content = b'{"results":[' + b",".join(_FRAGMENTS[id(r)] for r in results) + b"]}"
    return Response(content, media_type="application/json")
