"""Check rules: allowed only with consent given, in force, for a subject who is not a child.

A purpose that rests on another legal basis (e.g. `required`) is allowed without consent,
also for children; a purpose not in the tenant's catalogue is denied.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from consentry.consent.checks import repository
from consentry.consent.checks.models import CheckResult, Reason
from consentry.eventing.db import Pool

# Purpose name -> whether it requires consent, or None when the tenant has no such purpose.
RequiresConsent = Callable[[str], bool | None]

_ALLOWED = {Reason.GIVEN, Reason.LEGAL_BASIS}
_RESULTS = {reason: CheckResult(allowed=reason in _ALLOWED, reason=reason) for reason in Reason}
# Every answer a check can give (shared instances: callers may serialise them once).
RESULTS = tuple(_RESULTS.values())


def _decide(
    requires_consent: bool | None, status: str | None, reconsent: bool | None, child: bool | None
) -> CheckResult:
    if requires_consent is None:
        return _RESULTS[Reason.UNKNOWN_PURPOSE]
    if not requires_consent:
        return _RESULTS[Reason.LEGAL_BASIS]
    if child:
        return _RESULTS[Reason.CHILD]
    if status is None:
        return _RESULTS[Reason.NO_CONSENT]
    if status != "given":
        return _RESULTS[Reason.WITHDRAWN]
    if reconsent:
        return _RESULTS[Reason.NEEDS_RECONSENT]
    return _RESULTS[Reason.GIVEN]


async def check_one(
    pool: Pool,
    requires_consent: RequiresConsent,
    *,
    tenant_id: UUID,
    subject_ref: str,
    purpose: str,
) -> CheckResult:
    """May the subject's data be used for `purpose` now?"""
    (row,) = await repository.check_many(
        pool, tenant_id=tenant_id, subject_refs=[subject_ref], purposes=[purpose]
    )
    return _decide(
        requires_consent(purpose), row["status"], row["needs_reconsent"], row["is_child"]
    )


async def check_many(
    pool: Pool,
    requires_consent: RequiresConsent,
    *,
    tenant_id: UUID,
    pairs: list[tuple[str, str]],
) -> list[CheckResult]:
    """Check every (subject_ref, purpose) pair; results in the same order."""
    refs = [ref for ref, _ in pairs]
    purposes = [purpose for _, purpose in pairs]
    rows = await repository.check_many(
        pool, tenant_id=tenant_id, subject_refs=refs, purposes=purposes
    )
    needs = {purpose: requires_consent(purpose) for purpose in set(purposes)}
    return [
        _decide(needs[purpose], row["status"], row["needs_reconsent"], row["is_child"])
        for purpose, row in zip(purposes, rows, strict=True)
    ]
