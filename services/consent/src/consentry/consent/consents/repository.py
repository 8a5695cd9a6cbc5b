"""SQL for the consent ledger and current state. Functions receive an open connection."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from consentry.consent.consents.models import RecordedDecision
from consentry.eventing.db import Connection

# Creates the subject on first sight and locks its row for the rest of the transaction, so
# changes to one subject are serialised and its version grows without gaps.
_LOCK_SUBJECT = """
INSERT INTO subjects (tenant_id, subject_ref) VALUES ($1, $2)
ON CONFLICT (tenant_id, subject_ref) DO UPDATE SET version = subjects.version
RETURNING version
"""
_CURRENT = """
SELECT purpose, status, policy_version, method, source, occurred_at, subject_version, updated_at
FROM consents WHERE tenant_id = $1 AND subject_ref = $2 AND purpose = $3
"""
_ALL_CURRENT = """
SELECT s.version, c.purpose, c.status, c.policy_version, c.method, c.source, c.occurred_at,
       c.subject_version, c.updated_at
FROM subjects s LEFT JOIN consents c USING (tenant_id, subject_ref)
WHERE s.tenant_id = $1 AND s.subject_ref = $2
ORDER BY c.purpose
"""
# One round trip: bump the subject's version, append to the ledger, fold into current state.
_RECORD = """
WITH bumped AS (
    UPDATE subjects SET version = $3, updated_at = now()
    WHERE tenant_id = $1 AND subject_ref = $2
), ledger AS (
    INSERT INTO consent_ledger (event_id, tenant_id, subject_ref, subject_version, purpose,
                                status, policy_version, method, source, occurred_at)
    VALUES ($4, $1, $2, $3, $5, $6, $7, $8, $9, $10)
)
INSERT INTO consents (tenant_id, subject_ref, purpose, status, policy_version, method, source,
                      occurred_at, subject_version, event_id)
VALUES ($1, $2, $5, $6, $7, $8, $9, $10, $3, $4)
ON CONFLICT (tenant_id, subject_ref, purpose) DO UPDATE SET
    status = EXCLUDED.status, policy_version = EXCLUDED.policy_version,
    method = EXCLUDED.method, source = EXCLUDED.source, occurred_at = EXCLUDED.occurred_at,
    subject_version = EXCLUDED.subject_version, event_id = EXCLUDED.event_id, updated_at = now()
RETURNING purpose, status, policy_version, method, source, occurred_at, subject_version, updated_at
"""


async def lock_subject(conn: Connection, *, tenant_id: UUID, subject_ref: str) -> int:
    """Create/lock the subject row; return its current version."""
    version: int = await conn.fetchval(_LOCK_SUBJECT, tenant_id, subject_ref)
    return version


async def get_current(
    conn: Connection, *, tenant_id: UUID, subject_ref: str, purpose: str
) -> asyncpg.Record | None:
    """The current decision for one purpose, or None."""
    return await conn.fetchrow(_CURRENT, tenant_id, subject_ref, purpose)


async def list_current(
    conn: Connection, *, tenant_id: UUID, subject_ref: str
) -> list[asyncpg.Record]:
    """The subject's version with every current decision (no rows: unknown subject)."""
    return list(await conn.fetch(_ALL_CURRENT, tenant_id, subject_ref))


async def record(conn: Connection, decision: RecordedDecision) -> asyncpg.Record:
    """Append a decision to the ledger, update current state and the subject's version."""
    row = await conn.fetchrow(
        _RECORD,
        decision.tenant_id,
        decision.subject_ref,
        decision.subject_version,
        decision.event_id,
        decision.purpose,
        decision.status.value,
        decision.policy_version,
        decision.method.value,
        decision.source,
        decision.occurred_at,
    )
    assert row is not None
    return row
