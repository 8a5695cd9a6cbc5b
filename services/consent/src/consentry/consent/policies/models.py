"""Models of policy versions: the API's request and response, and what the rules work on."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, UrlConstraints, field_validator

from consentry.consent.consents.models import PolicyVersion, Purpose

MAX_NOTICE_CHARS = 20_000
PolicyUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2000)]


def normalise_notice(text: str) -> str:
    """Unicode NFC and no surrounding whitespace: how a notice is stored and hashed."""
    return unicodedata.normalize("NFC", text).strip()


def notice_digest(notice: str) -> bytes:
    """SHA-256 of the (normalised) notice text, UTF-8."""
    return hashlib.sha256(notice.encode()).digest()


class PolicyPurposeIn(BaseModel):
    """One purpose a version covers and the notice text shown for it."""

    model_config = ConfigDict(extra="forbid")

    purpose: Purpose
    notice: str = Field(min_length=1, max_length=MAX_NOTICE_CHARS)

    @field_validator("notice")
    @classmethod
    def _normalise(cls, value: str) -> str:
        value = normalise_notice(value)
        if not value:
            raise ValueError("the notice is blank")
        if len(value) > MAX_NOTICE_CHARS:  # NFC may lengthen a text (rarely)
            raise ValueError(f"the notice is longer than {MAX_NOTICE_CHARS} characters")
        return value


class PolicyVersionIn(BaseModel):
    """A policy (notice) version to publish."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "version": "2026-09",
                    "url": "https://example.com/privacy/2026-09",
                    "effective_on": "2026-09-01",
                    "purposes": [
                        {"purpose": "required", "notice": "We use cookies that ..."},
                        {"purpose": "performance", "notice": "With your consent we measure ..."},
                    ],
                }
            ]
        },
    )

    version: PolicyVersion = Field(description="unique per tenant, e.g. 2026-09")
    url: PolicyUrl = Field(description="where the full policy is published")
    effective_on: date = Field(description="takes effect at the start of this day (tenant time)")
    purposes: list[PolicyPurposeIn] = Field(min_length=1, max_length=64)

    @field_validator("purposes")
    @classmethod
    def _unique(cls, value: list[PolicyPurposeIn]) -> list[PolicyPurposeIn]:
        names = [p.purpose for p in value]
        if len(set(names)) != len(names):
            raise ValueError("each purpose may appear once")
        return value


class PolicyState(StrEnum):
    """Where a version stands: announced (not yet in force), effective, or superseded."""

    ANNOUNCED = "announced"
    EFFECTIVE = "effective"
    SUPERSEDED = "superseded"


class PolicyPurposeOut(BaseModel):
    """One purpose of a version, its notice and the notice's SHA-256 (hex)."""

    purpose: str
    notice: str
    notice_sha256: str


class PolicyVersionOut(BaseModel):
    """A published policy version."""

    version: str
    url: str
    state: PolicyState
    published_at: datetime
    announced_on: date = Field(description="the publication day in the tenant's time zone")
    effective_on: date
    effective_at: datetime = Field(description="the start of effective_on, tenant time")
    activated_at: datetime | None = Field(
        description="when the consents needing re-consent were flagged (null until then)"
    )
    previous_version: str | None
    changed_purposes: list[str] = Field(
        description="added, removed or with a changed notice compared with previous_version"
    )
    purposes: list[PolicyPurposeOut]


class PolicyVersionList(BaseModel):
    """A tenant's policy versions, by effective day."""

    versions: list[PolicyVersionOut]


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A version as the rules see it: when it applies and the hash of each purpose's notice."""

    version: str
    effective_at: datetime
    notices: Mapping[str, bytes] = field(default_factory=dict)
    url: str | None = None


@dataclass(frozen=True, slots=True)
class DueVersion:
    """A version whose effective instant has passed and that is not yet activated."""

    tenant_id: UUID
    version: str


def changed_purposes(
    previous: Mapping[str, bytes] | None, current: Mapping[str, bytes]
) -> list[str]:
    """Purposes added, removed or with a different notice; none for a first version."""
    if previous is None:
        return []
    names = previous.keys() | current.keys()
    return sorted(name for name in names if previous.get(name) != current.get(name))
