"""SQL of checks: current state only, never the ledger's history.

One round trip per check or batch: `consentry_check_consents` (migration 0006) scopes its
query to the tenant itself, so no explicit transaction is needed.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

from consentry.eventing.db import Pool

_CHECK = "SELECT n, status, needs_reconsent, is_child FROM consentry_check_consents($1, $2, $3)"


async def check_many(
    pool: Pool, *, tenant_id: UUID, subject_refs: list[str], purposes: list[str]
) -> list[asyncpg.Record]:
    """Status, re-consent flag and child flag for each (subject_ref, purpose), in order."""
    return list(await pool.fetch(_CHECK, tenant_id, subject_refs, purposes))
