"""Request and response models of the consents API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, IPvAnyAddress, StringConstraints

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


CHILD_AGE = 13  # under this age, consent-based purposes are refused (the policy's promise)
GPC_PURPOSES = ("targeting", "joint-marketing")  # sale/sharing: withdrawn on a GPC signal


class ClientInfo(BaseModel):
    """The client the decision came from. Only a keyed fingerprint of it is stored."""

    model_config = ConfigDict(extra="forbid")

    ip_address: IPvAnyAddress | None = None
    user_agent: str | None = Field(default=None, max_length=1024)


class CaptureContext(BaseModel):
    """What every capture carries besides the decisions: the proof of consent."""

    model_config = ConfigDict(extra="forbid")

    policy_version: PolicyVersion = Field(description="the policy (notice) version shown")
    method: ConsentMethod = ConsentMethod.API
    source: Source | None = Field(default=None, description="collection point, e.g. web-banner")
    occurred_at: AwareDatetime | None = Field(
        default=None, description="when the subject decided; defaults to now, never in the future"
    )
    gpc: bool = Field(
        default=False,
        description="a Global Privacy Control signal came with the decision (as the "
        "`Sec-GPC: 1` header does): targeting and joint-marketing are recorded as withdrawn",
    )
    age: int | None = Field(
        default=None,
        ge=0,
        le=150,
        description=f"an age signal; under {CHILD_AGE} consent-based purposes are refused",
    )
    client: ClientInfo | None = Field(
        default=None, description="stored only as a keyed fingerprint, never in clear"
    )


class ConsentDecisionIn(CaptureContext):
    """A decision to record: give or withdraw consent for one purpose."""

    status: ConsentStatus

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "status": "given",
                    "policy_version": "2026-01",
                    "method": "banner",
                    "source": "web-banner",
                }
            ]
        },
    )


class ConsentCaptureIn(CaptureContext):
    """Several decisions of one subject recorded at once (one receipt covers them all)."""

    purposes: dict[Purpose, ConsentStatus] = Field(
        min_length=1, max_length=64, description="purpose -> given | withdrawn"
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "purposes": {
                        "performance": "given",
                        "functionality": "given",
                        "targeting": "withdrawn",
                        "marketing-email": "given",
                    },
                    "policy_version": "2026-01",
                    "method": "banner",
                    "source": "web-banner",
                    "client": {"ip_address": "192.0.2.10", "user_agent": "Mozilla/5.0"},
                }
            ]
        },
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
    needs_reconsent: bool = Field(
        default=False, description="a later policy version changed this purpose: ask again"
    )


class RecordedConsent(ConsentState):
    """One decision as recorded, with the signed receipt of the call."""

    receipt: str = Field(description="compact JWS (EdDSA) consent receipt; see docs/receipts.md")
    receipt_id: UUID


class CaptureResult(BaseModel):
    """The outcome of a capture: every decision's state and the one signed receipt."""

    subject_ref: str = Field(description="pseudonymous subject reference (HMAC, hex)")
    subject_version: int = Field(description="the subject's version after this capture")
    consents: list[ConsentState]
    gpc_applied: bool = Field(description="a GPC signal withdrew targeting and joint-marketing")
    receipt: str = Field(description="compact JWS (EdDSA) consent receipt; see docs/receipts.md")
    receipt_id: UUID


class ProofEntry(BaseModel):
    """One recorded decision in a subject's history (the proof of consent)."""

    event_id: UUID
    subject_version: int
    purpose: str
    status: ConsentStatus
    policy_version: str
    policy_url: str | None
    method: ConsentMethod
    source: str | None
    occurred_at: datetime
    recorded_at: datetime
    gpc: bool
    client_fingerprint: str | None = Field(description="keyed hash of the client, never the IP")
    receipt_id: UUID | None


class SubjectProof(BaseModel):
    """A subject's full consent history, oldest first."""

    subject_ref: str
    version: int
    is_child: bool
    history: list[ProofEntry]


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
    receipt_id: UUID | None = None
    client_fingerprint: str | None = None
    gpc: bool = False

    def state(self, *, updated_at: datetime) -> ConsentState:
        """The current state this decision leaves for its purpose."""
        return ConsentState(
            purpose=self.purpose,
            status=self.status,
            policy_version=self.policy_version,
            method=self.method,
            source=self.source,
            occurred_at=self.occurred_at,
            subject_version=self.subject_version,
            updated_at=updated_at,
            needs_reconsent=False,
        )


SubjectId = Annotated[str, StringConstraints(min_length=1, max_length=320)]


class SubjectRefsIn(BaseModel):
    """Subject identifiers to pseudonymise."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"subject_ids": ["user-1842"]}]}
    )

    subject_ids: list[SubjectId] = Field(min_length=1, max_length=10_000)


class SubjectRefsOut(BaseModel):
    """One pseudonymous reference per identifier, in order."""

    subject_refs: list[str]
