"""Marketing lists: request and response models, suppression reasons."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from consentry.preferences.topics.models import Channel

SUBJECT_REF_PATTERN = r"^[0-9a-f]{64}$"
SubjectRef = Annotated[str, Field(pattern=SUBJECT_REF_PATTERN)]
MAX_PAGE = 1000
# Every marketing topic (a suppression's `topic`) or every channel (its `channel`).
ALL = ""


class SuppressionReason(StrEnum):
    """Why a subject is on the suppression list (stored in `list_suppressions.reason`)."""

    UNSUBSCRIBED = "unsubscribed"  # one click, the preference center or the API
    CONSENT_WITHDRAWN = "consent-withdrawn"  # the marketing-email consent was withdrawn
    ERASED = "erased"  # the subject's data was erased; never lifted


class Verdict(StrEnum):
    """Why the filter refuses a subject, most serious first (the first that applies wins)."""

    ERASED = "erased"
    CONSENT_WITHDRAWN = "consent-withdrawn"
    UNSUBSCRIBED = "unsubscribed"
    NO_CONSENT = "no-consent"  # no marketing-email decision known to the list processor
    NOT_SUBSCRIBED = "not-subscribed"  # not a member of the list (never subscribed)


class Member(BaseModel):
    """A sendable member of a list."""

    subject_ref: str = Field(description="the pseudonymous reference")
    contact: str | None = Field(
        description="the e-mail address sealed for the tenant's sending system (AES-256-GCM "
        "under the delivery key, base64url: see GET /v1/delivery-key); null when none is "
        "kept or the channel is not email"
    )


class MemberPage(BaseModel):
    """One page of a list's sendable members, in subject_ref order."""

    topic: str
    channel: Channel
    members: list[Member]
    next: str | None = Field(description="pass as `after` for the next page; null on the last page")


class FilterIn(BaseModel):
    """A proposed send list to check (subject refs, as in list pages and events)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"channel": "email", "subject_refs": ["9f2c" + "0" * 60, "ab" * 32]}]
        },
    )

    channel: Channel = Field(default=Channel.EMAIL, description="the channel of the send")
    subject_refs: list[SubjectRef] = Field(
        min_length=1, description="pseudonymous refs (64 lower-case hex characters)"
    )


class Refused(BaseModel):
    """A subject of the proposed list that must not be sent to, and why."""

    subject_ref: str
    reason: Verdict


class FilterOut(BaseModel):
    """The proposed list split in two (each ref once, in the order first given)."""

    sendable: list[str]
    suppressed: list[Refused]


class DeliveryKey(BaseModel):
    """The key a sending system decrypts list contacts with."""

    key_id: str = Field(description="first 8 bytes of SHA-256(key), hex")
    key: str = Field(description="32 bytes, base64 (standard alphabet, padded)")
    algorithm: str = "AES-256-GCM"
    layout: str = (
        "base64url(no padding) of: 1 version byte (0x01) | 12-byte nonce | ciphertext | 16-byte tag"
    )
    associated_data: str = "<tenant_id>/<subject_ref> (UTF-8)"
