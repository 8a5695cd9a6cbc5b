"""Mapping of policy versions and re-consent flags to their protobuf events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

from consentry.consent.v1 import policy_pb2
from consentry.eventing import catalogue
from consentry.eventing.envelope import Event, to_timestamp

SOURCE = "/consentry/consent"


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    """A published version as its events describe it."""

    tenant_id: UUID
    version: str
    url: str
    published_at: datetime
    announced_on: date
    effective_on: date
    effective_at: datetime
    notices: Mapping[str, bytes]  # purpose -> SHA-256 of its notice
    changed_purposes: list[str]
    previous_version: str | None


def _policy(facts: PolicyFacts) -> policy_pb2.PolicyVersion:
    return policy_pb2.PolicyVersion(
        tenant_id=str(facts.tenant_id),
        version=facts.version,
        url=facts.url,
        published_at=to_timestamp(facts.published_at),
        announced_on=facts.announced_on.isoformat(),
        effective_on=facts.effective_on.isoformat(),
        effective_at=to_timestamp(facts.effective_at),
        purposes=[
            policy_pb2.PolicyPurpose(purpose=name, notice_sha256=digest.hex())
            for name, digest in sorted(facts.notices.items())
        ],
        changed_purposes=facts.changed_purposes,
        previous_version=facts.previous_version or "",
    )


def published_event(facts: PolicyFacts) -> Event:
    """`consentry.consent.policy_published.v1`, key `<tenant>/policy`."""
    return Event(
        type=catalogue.POLICY_PUBLISHED,
        tenant_id=str(facts.tenant_id),
        subject_ref=catalogue.POLICY_SUBJECT,
        message=policy_pb2.PolicyPublished(policy=_policy(facts)),
        source=SOURCE,
        time=facts.published_at,
    )


def effective_event(facts: PolicyFacts, *, activated_at: datetime, flagged: int) -> Event:
    """`consentry.consent.policy_effective.v1`, key `<tenant>/policy`."""
    return Event(
        type=catalogue.POLICY_EFFECTIVE,
        tenant_id=str(facts.tenant_id),
        subject_ref=catalogue.POLICY_SUBJECT,
        message=policy_pb2.PolicyEffective(
            policy=_policy(facts),
            activated_at=to_timestamp(activated_at),
            reconsent_flagged=flagged,
        ),
        source=SOURCE,
        time=facts.effective_at,
    )


def reconsent_event(
    *,
    tenant_id: UUID,
    subject_ref: str,
    subject_version: int,
    purpose: str,
    previous_policy_version: str,
    policy_version: str,
    occurred_at: datetime,
) -> Event:
    """`consentry.consent.reconsent_required.v1`, key `<tenant>/<subject_ref>`."""
    return Event(
        type=catalogue.CONSENT_RECONSENT_REQUIRED,
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        message=policy_pb2.ReconsentRequired(
            tenant_id=str(tenant_id),
            subject_ref=subject_ref,
            subject_version=subject_version,
            purpose=purpose,
            previous_policy_version=previous_policy_version,
            policy_version=policy_version,
            occurred_at=to_timestamp(occurred_at),
        ),
        source=SOURCE,
        time=occurred_at,
    )
