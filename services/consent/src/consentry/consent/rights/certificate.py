"""The completion certificate of a rights request: a compact JWS (EdDSA) signed with the
tenant's receipt key (docs/receipts.md), so the tenant's public JWKS verifies it offline.

Its claims say what the request was, when it was received and completed, how many subjects
it covered (and a digest of their references), what each internal service erased, and which
external recipients confirmed or were dead-lettered and escalated, with times. It holds no
raw personal data: subjects appear only as a count and a digest of pseudonymous references,
or, for a single-subject request, as that one reference. docs/rights-requests.md lists the
claims and shows how to verify one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import jwt

from consentry.consent.receipts.models import SigningKey
from consentry.consent.receipts.service import (
    ALGORITHM,
    ensure_receipt_key,
    issuer,
    load_signing_key,
)
from consentry.consent.sealing import Sealer
from consentry.eventing.db import Connection

# Explicit typing (RFC 8725 §3.11): a certificate is never mistaken for a consent receipt.
CERTIFICATE_TYPE = "rights-certificate+jwt"
REQUEST_URN_PREFIX = "urn:consentry:rights-request:"


def _rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class ServiceReport:
    """What one internal service reported for the request's subjects."""

    service: str
    subjects: int
    erased: Sequence[str]
    first_completed_at: datetime | None
    last_completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """What one external recipient was told and answered (GDPR Art. 19)."""

    recipient_id: str
    selected: int
    acknowledged: int
    dead_lettered: int
    first_acknowledged_at: datetime | None
    last_acknowledged_at: datetime | None
    last_dead_lettered_at: datetime | None


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """Everything a certificate states."""

    tenant_id: UUID
    request_id: UUID
    kind: str
    requester: str
    received_at: datetime
    completed_at: datetime
    due_at: datetime
    subject_count: int
    subjects_sha256: str
    subject_ref: str | None  # only for a single-subject request
    services: Sequence[ServiceReport]
    recipients: Sequence[RecipientReport]


def certificate_claims(facts: CertificateFacts) -> dict[str, Any]:
    """The certificate's JWT claims (docs/rights-requests.md, "Completion certificate")."""
    subjects: dict[str, Any] = {"count": facts.subject_count, "sha256": facts.subjects_sha256}
    if facts.subject_ref is not None:
        subjects["ref"] = facts.subject_ref
    return {
        "iss": issuer(facts.tenant_id),
        "sub": f"{REQUEST_URN_PREFIX}{facts.request_id}",
        "jti": str(facts.request_id),
        "iat": int(facts.completed_at.timestamp()),
        "request": {
            "id": str(facts.request_id),
            "kind": facts.kind,
            "requester": facts.requester,
            "receivedAt": _rfc3339(facts.received_at),
            "completedAt": _rfc3339(facts.completed_at),
            "dueAt": _rfc3339(facts.due_at),
        },
        "subjects": subjects,
        "services": [
            {
                "service": report.service,
                "subjects": report.subjects,
                "erased": sorted(report.erased),
                "firstCompletedAt": _rfc3339(report.first_completed_at),
                "lastCompletedAt": _rfc3339(report.last_completed_at),
            }
            for report in facts.services
        ],
        "recipients": [
            {
                "recipient": report.recipient_id,
                "selected": report.selected,
                "confirmed": report.acknowledged,
                "deadLettered": report.dead_lettered,
                "escalated": report.dead_lettered > 0,
                "firstConfirmedAt": _rfc3339(report.first_acknowledged_at),
                "lastConfirmedAt": _rfc3339(report.last_acknowledged_at),
                "lastDeadLetteredAt": _rfc3339(report.last_dead_lettered_at),
            }
            for report in facts.recipients
        ],
    }


def sign_certificate(key: SigningKey, facts: CertificateFacts) -> str:
    """The certificate of `facts` as a compact JWS signed with the tenant's key."""
    if key.tenant_id != facts.tenant_id:
        raise ValueError("a certificate is signed only with its own tenant's key")
    return jwt.encode(
        certificate_claims(facts),
        key.private_key,
        algorithm=ALGORITHM,
        headers={"kid": key.kid, "typ": CERTIFICATE_TYPE},
    )


async def signing_key_in(conn: Connection, tenant_id: UUID, sealer: Sealer) -> SigningKey:
    """The tenant's active receipt key, read with `conn` (a tenant-scoped transaction), made
    first if the tenant has none. For the tracker, which already holds a connection in its
    batch transaction; the API asks its `ReceiptSigner` instead."""
    key = await load_signing_key(conn, tenant_id, sealer)
    if key is None:
        await ensure_receipt_key(conn, tenant_id, sealer)
        key = await load_signing_key(conn, tenant_id, sealer)
    assert key is not None
    return key
