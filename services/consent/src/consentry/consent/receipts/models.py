"""What a receipt says (`ReceiptFacts`) and the key documents of the receipts API."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field

from consentry.consent.consents.models import ConsentMethod, ConsentStatus


@dataclass(frozen=True, slots=True)
class ReceiptDecision:
    """One purpose's decision covered by a receipt."""

    purpose: str
    status: ConsentStatus
    legal_basis: str | None = None  # GDPR Art. 6(1) basis of the purpose, e.g. "consent"
    consent_type: str | None = None  # Kantara consentType, e.g. "EXPLICIT" or "IMPLIED"


@dataclass(frozen=True, slots=True)
class ReceiptFacts:
    """What the write path knows about one recorded call; a receipt states exactly this.

    `subject_ref` is the pseudonymous reference, never the caller's identifier: a receipt
    holds no raw personal data.
    """

    receipt_id: UUID
    tenant_id: UUID
    controller: str  # the tenant's name: the PII controller
    subject_ref: str
    decisions: tuple[ReceiptDecision, ...]
    policy_version: str
    policy_url: str | None
    method: ConsentMethod
    source: str | None  # collection point, e.g. web-banner
    occurred_at: datetime  # when the subject decided
    recorded_at: datetime  # when the service recorded it
    subject_version: int  # the subject's version after this call
    jurisdiction: str | None = None  # e.g. "SE"; omitted from the receipt when unknown

    def __post_init__(self) -> None:
        if not self.decisions:
            raise ValueError("a receipt covers at least one decision")
        if self.occurred_at.tzinfo is None or self.recorded_at.tzinfo is None:
            raise ValueError("receipt times must be timezone-aware")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A tenant's active receipt key, unsealed (kept in memory only)."""

    tenant_id: UUID
    kid: str
    private_key: Ed25519PrivateKey = field(repr=False)


class Jwk(BaseModel):
    """An Ed25519 public key as a JWK (RFC 8037); `kid` is its RFC 7638 thumbprint."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                    "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
                    "alg": "EdDSA",
                    "use": "sig",
                }
            ]
        }
    )

    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class Jwks(BaseModel):
    """A JWK Set (RFC 7517): every receipt key the tenant ever had, retired ones included."""

    keys: list[Jwk]


class RotatedKey(BaseModel):
    """The outcome of a rotation: the new active key and the one it retired."""

    kid: str = Field(description="the new active key; receipts from now on carry it")
    retired_kid: str | None = Field(description="the key retired now; it still verifies")
    jwk: Jwk
