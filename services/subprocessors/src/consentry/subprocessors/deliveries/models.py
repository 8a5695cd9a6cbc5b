"""Notices sent to recipients, their acknowledgements, and what the API reports about them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from consentry.subprocessors.recipients.models import EEA_COUNTRIES, Role
from consentry.subprocessors.signing import webhook_id

# The notice types in the webhook body (`type`), by notice kind.
NOTICE_TYPES = {"erasure": "erasure.requested", "consent-withdrawn": "consent.withdrawn"}


class Status(StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"  # not delivered yet (being retried)
    DELIVERED = "delivered"  # a 2xx answer, awaiting the acknowledgement
    ACKNOWLEDGED = "acknowledged"  # confirmed with a valid signature
    DEAD_LETTERED = "dead_lettered"  # given up after the retry window: flagged for a person


def rfc3339(moment: datetime) -> str:
    """UTC, milliseconds, `Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notice_body(
    *,
    kind: str,
    delivery_id: UUID,
    recipient_id: UUID,
    tenant_id: UUID,
    subject_ref: str,
    request_id: str,
    request_kind: str | None,
    purposes: list[str],
    occurred_at: datetime,
    ack_url: str,
) -> str:
    """The webhook body of one delivery (docs/webhooks.md), exactly as it is sent on every
    attempt: compact JSON, keys in a fixed order."""
    body: dict[str, object] = {
        "type": NOTICE_TYPES[kind],
        "webhook_id": webhook_id(delivery_id),
        "delivery_id": str(delivery_id),
        "recipient_id": str(recipient_id),
        "tenant_id": str(tenant_id),
        "subject_ref": subject_ref,
    }
    if kind == "erasure":
        body["request_id"] = request_id
        body["request_kind"] = request_kind
    else:
        body["purposes"] = purposes
    body["occurred_at"] = rfc3339(occurred_at)
    body["ack_url"] = ack_url
    return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True)
class Claimed:
    """A delivery held by one sender for one attempt (claimed, or leased at creation)."""

    tenant_id: UUID
    id: UUID
    recipient_id: UUID
    payload: str
    attempts: int
    deadline_at: datetime
    expired: bool
    webhook_url: str
    secret_sealed: bytes
    previous_secret_sealed: bytes | None
    previous_secret_expires_at: datetime | None

    @classmethod
    def of(cls, tenant_id: UUID, row: asyncpg.Record) -> Claimed:
        """From a row of `repository.claim` or `repository.insert_deliveries`."""
        return cls(
            tenant_id=tenant_id,
            id=row["id"],
            recipient_id=row["recipient_id"],
            payload=row["payload"],
            attempts=row["attempts"],
            deadline_at=row["deadline_at"],
            expired=row["expired"],
            webhook_url=row["webhook_url"],
            secret_sealed=row["secret_sealed"],
            previous_secret_sealed=row["previous_secret_sealed"],
            previous_secret_expires_at=row["previous_secret_expires_at"],
        )


class AcknowledgementIn(BaseModel):
    """A recipient's signed confirmation of one notice (other members are ignored)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "webhook_id": "msg_2b1c9f0e6a554c489d0a3f6f9f1c2d11",
                    "recipient_id": "0b6f3b0e-6a55-4c48-9d0a-3f6f9f1c2d11",
                }
            ]
        },
    )

    delivery_id: UUID | None = Field(default=None, description="the notice's `delivery_id`")
    webhook_id: str | None = Field(
        default=None, pattern=r"^msg_[0-9a-f]{32}$", description="or its `webhook-id`"
    )
    recipient_id: UUID

    @model_validator(mode="after")
    def _names_one_delivery(self) -> AcknowledgementIn:
        if self.delivery_id is None and self.webhook_id is None:
            raise ValueError("give delivery_id or webhook_id")
        if (
            self.delivery_id is not None
            and self.webhook_id is not None
            and webhook_id(self.delivery_id) != self.webhook_id
        ):
            raise ValueError("delivery_id and webhook_id name different deliveries")
        return self


class Acknowledgement(BaseModel):
    """The recorded acknowledgement."""

    delivery_id: UUID
    webhook_id: str
    recipient_id: UUID
    status: Status
    acknowledged_at: datetime
    already_acknowledged: bool = Field(description="true when this repeated an earlier one")


class RecipientProgress(BaseModel):
    """What one recipient was told about a request, and whether it confirmed (Art. 19)."""

    recipient_id: UUID
    name: str
    role: Role
    region: str
    deliveries: int = Field(description="notices (one per subject of the request)")
    status: Status = Field(
        description="pending while any notice is, then delivered, then dead_lettered if any "
        "was; acknowledged when all were"
    )
    first_notified_at: datetime | None = Field(description="the first attempt")
    attempts: int
    delivered_at: datetime | None = Field(description="when the last notice was delivered")
    acknowledged_at: datetime | None = Field(description="when the last one was confirmed")
    flagged_at: datetime | None = Field(description="a notice was dead-lettered: escalate")
    pending: int
    delivered: int
    acknowledged: int
    dead_lettered: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def outside_eea(self) -> bool:
        """The recipient's region lies outside the EEA."""
        return self.region not in EEA_COUNTRIES

    @computed_field  # type: ignore[prop-decorator]
    @property
    def flagged(self) -> bool:
        """Some notice was dead-lettered and needs a person to follow up."""
        return self.flagged_at is not None


class RequestRecipients(BaseModel):
    """Who we told about a rights request, when, and who confirmed."""

    request_id: str
    subjects: int = Field(description="subjects of the request seen by the notifier")
    first_selected_at: datetime | None
    complete: bool = Field(
        description="every notice is acknowledged or dead-lettered (then escalated)"
    )
    recipients: list[RecipientProgress]


class Delivery(BaseModel):
    """One notice to one recipient."""

    id: UUID
    recipient_id: UUID
    recipient_name: str
    kind: str = Field(description="erasure or consent-withdrawn")
    request_id: str = Field(description="the rights request ('' for a withdrawal)")
    subject_ref: str
    status: Status
    attempts: int
    created_at: datetime
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    deadline_at: datetime
    delivered_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_via: str | None = Field(description="response (signed 2xx) or callback")
    dead_lettered_at: datetime | None
    flagged_at: datetime | None
    last_error: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def webhook_id(self) -> str:
        """The Standard Webhooks message id, the same on every attempt."""
        return webhook_id(self.id)


class DeliveryList(BaseModel):
    """A page of deliveries; `next_after` continues the listing."""

    deliveries: list[Delivery]
    next_after: UUID | None
