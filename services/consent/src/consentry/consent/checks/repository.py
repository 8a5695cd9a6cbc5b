"""SQL of checks: current state only, never the ledger's history."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

# One row per requested position; NULL columns when the subject or decision is unknown.
_CHECK = """
SELECT q.n, c.status, c.needs_reconsent, s.is_child
FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS q(subject_ref, purpose, n)
LEFT JOIN subjects s ON s.tenant_id = $1 AND s.subject_ref = q.subject_ref
LEFT JOIN consents c
       ON c.tenant_id = $1 AND c.subject_ref = q.subject_ref AND c.purpose = q.purpose
ORDER BY q.n
"""
_CHECK_ONE = """
SELECT c.status, c.needs_reconsent, s.is_child
FROM subjects s
LEFT JOIN consents c ON c.tenant_id = s.tenant_id AND c.subject_ref = s.subject_ref
                    AND c.purpose = $3
WHERE s.tenant_id = $1 AND s.subject_ref = $2
"""


async def check_many(
    conn: Connection, *, tenant_id: UUID, subject_refs: list[str], purposes: list[str]
) -> list[asyncpg.Record]:
    """Status, re-consent flag and child flag for each (subject_ref, purpose), in order."""
    return list(await conn.fetch(_CHECK, tenant_id, subject_refs, purposes))


async def check_one(
    conn: Connection, *, tenant_id: UUID, subject_ref: str, purpose: str
) -> asyncpg.Record | None:
    """Status, re-consent flag and child flag of one pair (None: unknown subject)."""
    return await conn.fetchrow(_CHECK_ONE, tenant_id, subject_ref, purpose)
