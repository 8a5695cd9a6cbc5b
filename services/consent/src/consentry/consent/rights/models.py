"""Models of rights requests: the API's requests and answers, and the words they use."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from consentry.consent.rights.deadlines import DeadlineStatus

MAX_SUBJECTS = 100_000
MAX_NOTE_CHARS = 2000
MAX_REASON_CHARS = 1000

SubjectId = Annotated[str, StringConstraints(min_length=1, max_length=320)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class RequestKind(StrEnum):
    """What the request asks for (GDPR Art. 15, 16, 17; the policy's child-data promise)."""

    ERASURE = "erasure"
    ACCESS = "access"
    CORRECTION = "correction"
    CHILD_DATA_ERASURE = "child-data-erasure"

    @property
    def erases(self) -> bool:
        """Whether the request erases the subjects' data (fan-out of ErasureRequested)."""
        return self in (RequestKind.ERASURE, RequestKind.CHILD_DATA_ERASURE)


class Requester(StrEnum):
    """Who asked: the subject themselves, or the tenant (e.g. for its end users, in bulk)."""

    SUBJECT = "subject"
    TENANT = "tenant"


class RequestState(StrEnum):
    """received -> identity-verified -> in-progress -> completed | rejected."""

    RECEIVED = "received"
    IDENTITY_VERIFIED = "identity-verified"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    REJECTED = "rejected"

    @property
    def closed(self) -> bool:
        """Completed or rejected: nothing changes any more."""
        return self in (RequestState.COMPLETED, RequestState.REJECTED)


class DeadlineFilter(StrEnum):
    """The `deadline` filter of the listing."""

    OVERDUE = "overdue"
    DUE_SOON = "due-soon"
    ALL = "all"


class RightsRequestIn(BaseModel):
    """A rights request to file."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kind": "erasure", "requester": "subject", "subject_id": "user-4711"},
                {
                    "kind": "erasure",
                    "requester": "tenant",
                    "subject_ids": ["user-1", "user-2", "user-3"],
                    "note": "contract ended",
                },
            ]
        },
    )

    kind: RequestKind
    requester: Requester
    subject_id: SubjectId | None = Field(
        default=None,
        description="the caller's identifier of the subject; stored only as a pseudonymous "
        "reference",
    )
    subject_ids: list[SubjectId] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SUBJECTS,
        description=f"a tenant's request for many subjects at once (1 to {MAX_SUBJECTS:,}); "
        "repeated identifiers count once",
    )
    note: str | None = Field(
        default=None,
        max_length=MAX_NOTE_CHARS,
        description="free text for the people handling the request; stored sealed",
    )

    @model_validator(mode="after")
    def _one_way_to_name_subjects(self) -> Self:
        if (self.subject_id is None) == (self.subject_ids is None):
            raise ValueError("give either subject_id or subject_ids")
        if self.subject_ids is not None and self.requester is not Requester.TENANT:
            raise ValueError("only a tenant requester may name several subjects")
        named = [self.subject_id] if self.subject_id is not None else self.subject_ids or []
        if any(not subject.strip() for subject in named):
            raise ValueError("a subject identifier is blank")
        return self

    @property
    def subjects(self) -> list[str]:
        """The subject identifiers named, in order."""
        return [self.subject_id] if self.subject_id is not None else list(self.subject_ids or [])


class IdentityIn(BaseModel):
    """The outcome of the identity verification of a subject's request."""

    model_config = ConfigDict(extra="forbid")

    verified: bool
    reason: Reason | None = Field(
        default=None, description="required when not verified: why (no personal data)"
    )

    @model_validator(mode="after")
    def _reason_when_refused(self) -> Self:
        if not self.verified and self.reason is None:
            raise ValueError("a request whose identity was not verified needs a reason")
        return self


class ExtensionIn(BaseModel):
    """Extend the deadline once by one or two months (Art. 12(3))."""

    model_config = ConfigDict(extra="forbid")

    months: int = Field(ge=1, le=2)
    reason: Reason = Field(description="why the extension is necessary (no personal data)")
    notice_sent_at: AwareDatetime = Field(
        description="when the requester was told of the extension and its reasons; it must "
        "be before the end of the first month"
    )


class RejectionIn(BaseModel):
    """Reject the request (e.g. manifestly unfounded or excessive, Art. 12(5))."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(description="told to the requester and published (no personal data)")

    @field_validator("reason")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("the reason must be printable text")
        return value


class PauseOut(BaseModel):
    """One stop of the clock while the subject's identity was being verified."""

    paused_at: datetime
    resumed_at: datetime | None


class ExtensionOut(BaseModel):
    """The one extension of the deadline."""

    months: int
    reason: str
    notice_sent_at: datetime
    extended_at: datetime


class DeadlineOut(BaseModel):
    """The request's deadline and where it stands now."""

    due_at: datetime = Field(description="the instant the deadline passes (end of the due day)")
    status: DeadlineStatus
    days_left: int = Field(description="local calendar days to the due day (0 on it, < 0 after)")
    original_due_at: datetime = Field(description="the end of the first month (pauses counted)")
    timezone: str
    holiday_country: str
    pauses: list[PauseOut]
    extension: ExtensionOut | None


class ServiceProgress(BaseModel):
    """One internal service's reports for the request's subjects."""

    service: str
    subjects: int = Field(description="subjects it reported erased")
    erased: list[str] = Field(description="what it erased, e.g. consents, data-key")
    last_completed_at: datetime | None


class RecipientProgress(BaseModel):
    """One external recipient's notices about the request's subjects (GDPR Art. 19)."""

    recipient_id: str
    selected: int = Field(description="subjects it had to be told about")
    acknowledged: int
    dead_lettered: int = Field(description="notices not delivered in time: escalated")
    first_acknowledged_at: datetime | None
    last_acknowledged_at: datetime | None
    last_dead_lettered_at: datetime | None


class ProgressOut(BaseModel):
    """How far the request's fan-out and answers have come."""

    subjects: int
    fanned_out: int = Field(description="subjects whose requests went out to every service")
    done: int = Field(description="subjects every expected service and recipient answered for")
    recipients_selected: int = Field(description="subjects whose recipients are known")
    expected_services: list[str]
    await_recipients: bool
    services: list[ServiceProgress]
    recipients: list[RecipientProgress]


class RightsRequestOut(BaseModel):
    """A rights request, its deadline, its progress and, once completed, its certificate."""

    id: UUID
    kind: RequestKind
    requester: Requester
    state: RequestState
    subject_count: int
    subject_ref: str | None = Field(
        description="the pseudonymous reference of a single-subject request"
    )
    note: str | None
    reason: str | None = Field(description="why it was rejected")
    received_at: datetime
    verified_at: datetime | None
    started_at: datetime | None
    closed_at: datetime | None
    deadline: DeadlineOut
    progress: ProgressOut
    certificate: str | None = Field(
        description="the signed completion certificate (compact JWS, EdDSA; verify with "
        "GET /v1/tenants/{tenant_id}/jwks.json)"
    )


class RightsRequestSummary(BaseModel):
    """A request in a listing."""

    id: UUID
    kind: RequestKind
    requester: Requester
    state: RequestState
    subject_count: int
    received_at: datetime
    due_at: datetime
    deadline_status: DeadlineStatus
    days_left: int


class RightsRequestList(BaseModel):
    """A page of the tenant's requests by due instant."""

    requests: list[RightsRequestSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class ExportLinkOut(BaseModel):
    """A short-lived link to a completed access request's export (no API key needed)."""

    url: str = Field(description="GET it for the export (JSON); hand it to the requester")
    expires_at: datetime
