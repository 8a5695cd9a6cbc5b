"""Consent rules: validate a capture, record it through the group-commit writer, read state.

`prepare_capture` turns a request into a `Capture` using the tenant's purposes and policy
versions (`PurposeRules`, implemented by the policies domain) and the GPC and child rules;
everything it refuses is refused before any write. Recording happens in `capture.py`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID

from consentry.consent.consents import repository
from consentry.consent.consents.capture import Capture, Decision, state_from_row
from consentry.consent.consents.models import (
    CHILD_AGE,
    GPC_PURPOSES,
    CaptureContext,
    ClientInfo,
    ConsentMethod,
    ConsentStatus,
    ProofEntry,
    SubjectConsents,
    SubjectProof,
)
from consentry.consent.db import tenant_transaction
from consentry.eventing.db import Pool
from consentry.httpapi.problems import Problem

# Clocks differ; a decision stamped a little in the future is accepted, more is refused.
CLOCK_SKEW = timedelta(minutes=5)


class PurposeFacts(Protocol):
    """What the consent rules need to know about a purpose."""

    @property
    def requires_consent(self) -> bool: ...


class PurposeRules(Protocol):
    """A tenant's purposes and policy versions, as the consent rules consult them."""

    def check_decision(self, purpose: str, policy_version: str, withdrawing: bool) -> PurposeFacts:
        """Raise a Problem if the decision is not allowed; else the purpose's facts."""
        ...

    def has_purpose(self, purpose: str) -> bool:
        """Whether the tenant's catalogue has `purpose`."""
        ...


def client_fingerprint(subject_key: bytes, client: ClientInfo | None) -> str | None:
    """A keyed hash of the client (IP address and user agent); the IP is never stored."""
    if client is None or (client.ip_address is None and not client.user_agent):
        return None
    material = f"client\0{client.ip_address or ''}\0{client.user_agent or ''}".encode()
    return hmac.new(subject_key, material, hashlib.sha256).hexdigest()


def prepare_capture(
    rules: PurposeRules,
    *,
    tenant_id: UUID,
    subject_ref: str,
    purposes: Mapping[str, ConsentStatus],
    context: CaptureContext,
    gpc_signal: bool,
    fingerprint: str | None,
    now: datetime | None = None,
) -> Capture:
    """Validate a capture request; raise its Problem, or return the Capture to record.

    A GPC signal (the `Sec-GPC: 1` header or `gpc: true`) records `targeting` and
    `joint-marketing` as withdrawn with method `gpc`, whatever the request asked for them.
    """
    now = now or datetime.now(UTC)
    occurred_at = context.occurred_at or now
    if occurred_at > now + CLOCK_SKEW:
        raise Problem(
            422,
            "occurred-in-future",
            "occurred_at lies in the future",
            "occurred_at must not be later than now",
        )
    gpc = gpc_signal or context.gpc
    decisions: dict[str, Decision] = {}
    for purpose, status in purposes.items():
        if gpc and purpose in GPC_PURPOSES:
            continue  # recorded below as a GPC withdrawal
        facts = rules.check_decision(
            purpose, context.policy_version, withdrawing=status is ConsentStatus.WITHDRAWN
        )
        decisions[purpose] = Decision(purpose, status, facts.requires_consent)
    if gpc:
        for purpose in GPC_PURPOSES:
            if rules.has_purpose(purpose):
                decisions[purpose] = Decision(
                    purpose, ConsentStatus.WITHDRAWN, True, method=ConsentMethod.GPC
                )
    if not decisions:
        raise Problem(422, "validation-error", "The request is not valid", "no purpose to record")
    return Capture(
        tenant_id=tenant_id,
        subject_ref=subject_ref,
        decisions=tuple(decisions.values()),
        policy_version=context.policy_version,
        method=context.method,
        source=context.source,
        occurred_at=occurred_at,
        gpc=gpc,
        child=context.age is not None and context.age < CHILD_AGE,
        client_fingerprint=fingerprint,
    )


async def list_consents(pool: Pool, *, tenant_id: UUID, subject_ref: str) -> SubjectConsents | None:
    """Every current decision of a subject, or None for a subject never seen."""
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await repository.list_current(conn, tenant_id=tenant_id, subject_ref=subject_ref)
    if not rows:
        return None
    return SubjectConsents(
        subject_ref=subject_ref,
        version=rows[0]["version"],
        consents=[state_from_row(row) for row in rows if row["purpose"] is not None],
    )


async def proof(pool: Pool, *, tenant_id: UUID, subject_ref: str) -> SubjectProof | None:
    """The subject's whole consent history with its proof, or None for an unknown subject."""
    async with tenant_transaction(pool, tenant_id) as conn:
        subject = await repository.get_subject(conn, tenant_id=tenant_id, subject_ref=subject_ref)
        if subject is None:
            return None
        rows = await repository.history(conn, tenant_id=tenant_id, subject_ref=subject_ref)
    return SubjectProof(
        subject_ref=subject_ref,
        version=subject["version"],
        is_child=subject["is_child"],
        history=[
            ProofEntry(
                event_id=row["event_id"],
                subject_version=row["subject_version"],
                purpose=row["purpose"],
                status=ConsentStatus(row["status"]),
                policy_version=row["policy_version"],
                policy_url=row["policy_url"],
                method=ConsentMethod(row["method"]),
                source=row["source"],
                occurred_at=row["occurred_at"],
                recorded_at=row["recorded_at"],
                gpc=row["gpc"],
                client_fingerprint=row["client_fingerprint"],
                receipt_id=row["receipt_id"],
            )
            for row in rows
        ],
    )
