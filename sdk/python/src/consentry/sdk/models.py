"""What the APIs answer, typed: only the fields product code needs; the rest is kept
(`extra="allow"`, e.g. `model.model_extra`), so a newer server never breaks an older SDK."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Status = Literal["given", "withdrawn"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ConsentState(_Model):
    """The current decision for one purpose."""

    purpose: str
    status: Status
    policy_version: str
    occurred_at: datetime
    subject_version: int
    needs_reconsent: bool = False


class RecordedConsent(ConsentState):
    """A decision as recorded, with the signed receipt (compact JWS) of the call."""

    receipt: str
    receipt_id: str


class CaptureResult(_Model):
    """Several decisions recorded at once, with the one signed receipt covering them."""

    subject_ref: str
    subject_version: int
    consents: list[ConsentState]
    gpc_applied: bool
    receipt: str
    receipt_id: str


class SubjectConsents(_Model):
    """Every current decision of one subject."""

    subject_ref: str
    version: int
    consents: list[ConsentState]

    def status(self, purpose: str) -> Status | None:
        """The decision for `purpose`, or None when the subject never decided on it."""
        return next((c.status for c in self.consents if c.purpose == purpose), None)


class ProofEntry(_Model):
    """One recorded decision in a subject's history."""

    event_id: str
    purpose: str
    status: Status
    policy_version: str
    method: str
    occurred_at: datetime
    receipt_id: str | None = None


class SubjectProof(_Model):
    """A subject's full consent history, oldest first (the proof of consent)."""

    subject_ref: str
    version: int
    history: list[ProofEntry]


class CheckResult(_Model):
    """May the subject's data be used for the purpose now, and why."""

    allowed: bool
    reason: str


class RightsRequest(_Model):
    """A rights request: its state, deadline and progress (`deadline`, `progress` as sent)."""

    id: str
    kind: str
    requester: str
    state: str
    subject_count: int
    subject_ref: str | None = None
    received_at: datetime
    closed_at: datetime | None = None
    deadline: dict[str, Any]
    progress: dict[str, Any]
    certificate: str | None = None

    @property
    def closed(self) -> bool:
        """Completed or rejected: nothing changes any more."""
        return self.state in ("completed", "rejected")


class TopicState(_Model):
    """A subject's subscription to one topic, per channel."""

    topic: str
    category: str
    channels: dict[str, bool]


class Preferences(_Model):
    """A subject's preferences over every topic."""

    subject_ref: str
    version: int
    all_marketing_unsubscribed: bool
    marketing_consent: bool | None = None
    topics: list[TopicState]

    def subscribed(self, topic: str, channel: str = "email") -> bool | None:
        """Whether the subject gets `topic` on `channel` (None: no such topic or channel)."""
        for state in self.topics:
            if state.topic == topic:
                return state.channels.get(channel)
        return None


class Member(_Model):
    """A sendable member of a list (its contact sealed for the tenant's sending system)."""

    subject_ref: str
    contact: str | None = None


class MemberPage(_Model):
    """One page of a list's sendable members; pass `next` as `after` for the next page."""

    topic: str
    channel: str
    members: list[Member]
    next: str | None = None


class FilteredList(_Model):
    """A proposed send list split in two: `sendable`, and `suppressed` with reasons."""

    sendable: list[str]
    suppressed: list[dict[str, Any]]
