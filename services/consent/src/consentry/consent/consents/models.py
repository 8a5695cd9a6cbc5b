"""Request and response models of the consents API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

PURPOSE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
Purpose = Annotated[str, StringConstraints(pattern=PURPOSE_PATTERN)]
PolicyVersion = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Source = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]


class ConsentStatus(StrEnum):
    """Whether consent is given or withdrawn."""

    GIVEN = "given"
    WITHDRAWN = "withdrawn"


class ConsentMethod(StrEnum):
    """How the decision was collected (part of the proof of consent)."""

    API = "api"
    BANNER = "banner"
    PREFERENCE_PAGE = "preference-page"
    IMPORT = "import"
    GPC = "gpc"


class ConsentDecisionIn(BaseModel):
    """A decision to record: give or withdraw consent for one purpose."""

    model_config = ConfigDict(extra="forbid")

    status: ConsentStatus
    policy_version: PolicyVersion = Field(description="the policy (notice) version shown")
    method: ConsentMethod = ConsentMethod.API
    source: Source | None = Field(default=None, description="collection point, e.g. web-banner")
    occurred_at: AwareDatetime | None = Field(
        default=None, description="when the subject decided; defaults to now, never in the future"
    )


class ConsentState(BaseModel):
    """The current decision for one purpose."""

    purpose: str
    status: ConsentStatus
    policy_version: str
    method: ConsentMethod
    source: str | None
    occurred_at: datetime
    subject_version: int = Field(description="the subject's version when this was decided")
    updated_at: datetime


class SubjectConsents(BaseModel):
    """Every current decision of one subject."""

    subject_ref: str = Field(description="pseudonymous subject reference (HMAC, hex)")
    version: int = Field(description="the subject's version: grows with every change")
    consents: list[ConsentState]


@dataclass(frozen=True, slots=True)
class RecordedDecision:
    """A decision as the service records and publishes it."""

    event_id: UUID
    tenant_id: UUID
    subject_ref: str
    subject_version: int
    purpose: str
    status: ConsentStatus
    policy_version: str
    method: ConsentMethod
    source: str | None
    occurred_at: datetime
