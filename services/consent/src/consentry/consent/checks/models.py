"""Request and response models of consent checks."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from consentry.consent.consents.models import Purpose

MAX_BATCH = 10_000


class Reason(StrEnum):
    """Why a check answered as it did."""

    GIVEN = "given"  # allowed: consent is given under a policy still in force
    LEGAL_BASIS = "legal-basis"  # allowed: the purpose rests on a basis other than consent
    NO_CONSENT = "no-consent"  # denied: never decided
    WITHDRAWN = "withdrawn"  # denied
    NEEDS_RECONSENT = "needs-reconsent"  # denied: the purpose changed since consent was given
    CHILD = "child"  # denied: the subject is under 13
    UNKNOWN_PURPOSE = "unknown-purpose"  # denied: not in the tenant's catalogue


class CheckResult(BaseModel):
    """The answer for one subject and purpose."""

    allowed: bool
    reason: Reason


class CheckItem(BaseModel):
    """One subject-purpose pair: the subject by the caller's id or by its pseudonymous ref
    (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid")

    subject_id: str | None = Field(default=None, min_length=1, max_length=320)
    subject_ref: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    purpose: Purpose
    # Exactly one of subject_id and subject_ref: checked by the route for the whole batch at
    # once (a validator per item costs more than the check itself at 10,000 items).


class BatchCheckIn(BaseModel):
    """Up to 10,000 subject-purpose pairs."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "checks": [
                        {"subject_id": "user-1842", "purpose": "targeting"},
                        {"subject_id": "user-1842", "purpose": "performance"},
                    ]
                }
            ]
        },
    )

    checks: list[CheckItem] = Field(min_length=1, max_length=MAX_BATCH)


class BatchCheckOut(BaseModel):
    """One result per requested pair, in the request's order."""

    results: list[CheckResult]
