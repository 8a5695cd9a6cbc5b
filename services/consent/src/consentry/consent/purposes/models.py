"""Models of purposes: the API's request and response, and the facts the write path reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

REQUIRED = "required"  # the strictly necessary purpose: always on, never withdrawable


# The purposes every tenant starts with (seeded by consentry_seed_default_purposes(), migration
# 0004): the four cookie categories, then purposes of the policy's other promises.
DEFAULT_PURPOSES = (
    "required",
    "performance",
    "functionality",
    "targeting",
    "joint-marketing",
    "transfer-outside-eea",
    "marketing-email",
)


class LegalBasis(StrEnum):
    """The lawful basis of processing for a purpose (GDPR Art. 6(1)(a)-(f))."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal-obligation"
    VITAL_INTEREST = "vital-interest"
    PUBLIC_TASK = "public-task"
    LEGITIMATE_INTEREST = "legitimate-interest"


class PurposeIn(BaseModel):
    """A purpose to create or update."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Product research",
                    "description": "Interviews and surveys about the product.",
                    "legal_basis": "consent",
                }
            ]
        },
    )

    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    legal_basis: LegalBasis
    always_on: bool = Field(
        default=False,
        description="cannot be withdrawn (strictly necessary); needs a basis other than consent",
    )


class PurposeOut(BaseModel):
    """A purpose of the tenant's catalogue."""

    name: str
    title: str
    description: str
    legal_basis: LegalBasis
    requires_consent: bool = Field(description="true when the legal basis is consent")
    always_on: bool = Field(description="cannot be withdrawn")
    created_at: datetime
    updated_at: datetime


class PurposeList(BaseModel):
    """The tenant's purposes, by name."""

    purposes: list[PurposeOut]


@dataclass(frozen=True, slots=True)
class PurposeInfo:
    """What the consent rules need to know about one purpose."""

    name: str
    legal_basis: LegalBasis
    always_on: bool

    @property
    def requires_consent(self) -> bool:
        """Whether processing for it rests on consent."""
        return self.legal_basis is LegalBasis.CONSENT
