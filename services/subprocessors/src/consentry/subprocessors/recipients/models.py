"""Recipients (subprocessors, affiliates, partners): request and response models."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    computed_field,
    field_validator,
    model_validator,
)

# The European Economic Area: the 27 EU member states, Iceland, Liechtenstein and Norway
# (ISO 3166-1 alpha-2). A transfer to any other region is a transfer outside the EEA.
EEA_COUNTRIES = frozenset(
    {
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
        "IS", "LI", "NO",
    }
)  # fmt: skip
PURPOSE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
MAX_URL_LENGTH = 2000


class Role(StrEnum):
    """Why the recipient receives personal data (the categories the policy names)."""

    PAYMENT = "payment"
    BILLING = "billing"
    AFFILIATE = "affiliate"
    JOINT_MARKETING = "joint-marketing"


Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]
Region = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{2}$"),
    Field(description="ISO 3166-1 alpha-2 country code, e.g. SE or US"),
]
Purpose = Annotated[str, StringConstraints(pattern=PURPOSE_PATTERN)]
Category = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]


def check_webhook_url(url: str) -> str:
    """An absolute http(s) URL without credentials or fragment (ValueError otherwise).

    Whether plain http and which hosts are allowed depends on the environment and is
    decided by the service (`service.check_target`)."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise ValueError("the webhook URL must be https")
    if not parts.hostname:
        raise ValueError("the webhook URL needs a host")
    if parts.username or parts.password:
        raise ValueError("no credentials in the URL: the signature authenticates us")
    if parts.fragment:
        raise ValueError("no fragment in the webhook URL")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("the webhook URL's port is not valid") from None
    return url


def _distinct(values: list[str]) -> list[str]:
    return sorted(set(values))


_EXAMPLE: dict[str, JsonValue] = {
    "name": "Acme Payments AB",
    "role": "payment",
    "region": "SE",
    "webhook_url": "https://hooks.acme-payments.example/consentry",
    "purposes": ["payments"],
    "data_categories": ["contact details", "payment history"],
}


class RecipientIn(BaseModel):
    """A recipient to register."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    name: Name
    role: Role
    region: Region
    webhook_url: str = Field(description="https (plain http only on loopback in development)")
    purposes: list[Purpose] = Field(
        default_factory=list,
        max_length=50,
        description="consent purposes the recipient receives data for (e.g. targeting, "
        "joint-marketing); a withdrawal of one of them is sent to the recipient",
    )
    data_categories: list[Category] = Field(
        default_factory=list, max_length=50, description="e.g. contact details, usage data"
    )

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, url: str) -> str:
        return check_webhook_url(url)

    @field_validator("purposes", "data_categories")
    @classmethod
    def _sets(cls, values: list[str]) -> list[str]:
        return _distinct(values)


class RecipientPatch(BaseModel):
    """A change to a recipient: only the fields given change (`active: true` reactivates)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"purposes": ["payments", "targeting"]}]}
    )

    name: Name | None = None
    role: Role | None = None
    region: Region | None = None
    webhook_url: str | None = None
    purposes: list[Purpose] | None = Field(default=None, max_length=50)
    data_categories: list[Category] | None = Field(default=None, max_length=50)
    active: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(name for name, value in data.items() if value is None)
            if nulls:
                raise ValueError(f"omit a field to keep it; null is not a value: {nulls}")
        return data

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return None if url is None else check_webhook_url(url)

    @field_validator("purposes", "data_categories")
    @classmethod
    def _sets(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else _distinct(values)


class Recipient(BaseModel):
    """A registered recipient (never its signing secret)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_EXAMPLE,
                    "id": "0b6f3b0e-6a55-4c48-9d0a-3f6f9f1c2d11",
                    "outside_eea": False,
                    "active": True,
                    "created_at": "2026-11-29T08:00:00Z",
                    "updated_at": "2026-11-29T08:00:00Z",
                    "deactivated_at": None,
                    "secret_rotated_at": None,
                }
            ]
        }
    )

    id: UUID
    name: str
    role: Role
    region: str
    webhook_url: str
    purposes: list[str]
    data_categories: list[str]
    active: bool
    created_at: datetime
    updated_at: datetime
    deactivated_at: datetime | None
    secret_rotated_at: datetime | None

    @computed_field(description="the region lies outside the European Economic Area")  # type: ignore[prop-decorator]
    @property
    def outside_eea(self) -> bool:
        """Whether sharing with this recipient is a transfer outside the EEA."""
        return self.region not in EEA_COUNTRIES


class RecipientList(BaseModel):
    """The tenant's recipients, oldest first."""

    recipients: list[Recipient]


class CreatedRecipient(Recipient):
    """A recipient just registered, with its signing secret: shown this once."""

    signing_secret: str = Field(
        description="the Standard Webhooks secret (`whsec_…`) that signs our notices and the "
        "recipient's acknowledgements; it cannot be shown again (rotate to get a new one)"
    )


class RotatedSecret(BaseModel):
    """A new signing secret: shown this once."""

    recipient_id: UUID
    signing_secret: str = Field(description="the new secret (`whsec_…`)")
    previous_secret_valid_until: datetime | None = Field(
        description="until then notices carry a signature with the previous secret too, and "
        "acknowledgements signed with it are accepted"
    )
