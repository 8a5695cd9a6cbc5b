"""Consent rules: one transaction writes the ledger, the current state and the outbox row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from consentry.consent.consents import repository
from consentry.consent.consents.events import decision_event
from consentry.consent.consents.models import (
    ConsentDecisionIn,
    ConsentMethod,
    ConsentState,
    ConsentStatus,
    RecordedDecision,
    SubjectConsents,
)
from consentry.eventing import outbox
from consentry.eventing.db import Pool
from consentry.httpapi.problems import Problem

# Clocks differ; a decision stamped a little in the future is accepted, more is refused.
CLOCK_SKEW = timedelta(minutes=5)


def _state(row: asyncpg.Record) -> ConsentState:
    return ConsentState(
        purpose=row["purpose"],
        status=ConsentStatus(row["status"]),
        policy_version=row["policy_version"],
        method=ConsentMethod(row["method"]),
        source=row["source"],
        occurred_at=row["occurred_at"],
        subject_version=row["subject_version"],
        updated_at=row["updated_at"],
    )


def _unchanged(current: asyncpg.Record | None, decision: ConsentDecisionIn) -> bool:
    return (
        current is not None
        and current["status"] == decision.status
        and current["policy_version"] == decision.policy_version
    )


async def record_decision(
    pool: Pool, *, tenant_id: UUID, subject_ref: str, purpose: str, decision: ConsentDecisionIn
) -> ConsentState:
    """Record a decision; a repeat of the current decision changes nothing and publishes nothing."""
    now = datetime.now(UTC)
    occurred_at = decision.occurred_at or now
    if occurred_at > now + CLOCK_SKEW:
        raise Problem(
            422,
            "occurred-in-future",
            "occurred_at lies in the future",
            "occurred_at must not be later than now",
        )
    async with pool.acquire() as conn, conn.transaction():
        version = await repository.lock_subject(conn, tenant_id=tenant_id, subject_ref=subject_ref)
        current = await repository.get_current(
            conn, tenant_id=tenant_id, subject_ref=subject_ref, purpose=purpose
        )
        if _unchanged(current, decision):
            assert current is not None
            return _state(current)
        recorded = RecordedDecision(
            event_id=uuid.uuid4(),
            tenant_id=tenant_id,
            subject_ref=subject_ref,
            subject_version=version + 1,
            purpose=purpose,
            status=decision.status,
            policy_version=decision.policy_version,
            method=decision.method,
            source=decision.source,
            occurred_at=occurred_at,
        )
        row = await repository.record(conn, recorded)
        await outbox.add(conn, decision_event(recorded))
        return _state(row)


async def list_consents(pool: Pool, *, tenant_id: UUID, subject_ref: str) -> SubjectConsents | None:
    """Every current decision of a subject, or None for a subject never seen."""
    async with pool.acquire() as conn:
        rows = await repository.list_current(conn, tenant_id=tenant_id, subject_ref=subject_ref)
    if not rows:
        return None
    return SubjectConsents(
        subject_ref=subject_ref,
        version=rows[0]["version"],
        consents=[_state(row) for row in rows if row["purpose"] is not None],
    )
