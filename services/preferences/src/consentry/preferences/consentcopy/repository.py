"""SQL of this service's consent copy (`consent_copy`, `tenant_policy`). Functions receive an
open connection scoped to the tenant (RLS).

The read functions are what the rest of the service asks: whether a subject gave the
`marketing-email` consent, all its consents, the tenant's policy version in effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from consentry.eventing.db import Connection

MARKETING_PURPOSE = "marketing-email"

# One statement for a tenant's decisions; an older subject version never overwrites a newer
# one (a stale or re-delivered event changes nothing). The caller passes at most one row per
# (subject, purpose): a statement cannot update a row twice.
_UPSERT_DECISIONS = """
INSERT INTO consent_copy
    (tenant_id, subject_ref, purpose, given, subject_version, policy_version, decided_at)
SELECT $1, d.subject_ref, d.purpose, d.given, d.subject_version, d.policy_version, d.decided_at
FROM unnest($2::text[], $3::text[], $4::boolean[], $5::bigint[], $6::text[], $7::timestamptz[])
    AS d (subject_ref, purpose, given, subject_version, policy_version, decided_at)
ON CONFLICT (tenant_id, subject_ref, purpose) DO UPDATE
SET given = EXCLUDED.given, subject_version = EXCLUDED.subject_version,
    policy_version = EXCLUDED.policy_version, decided_at = EXCLUDED.decided_at
WHERE consent_copy.subject_version < EXCLUDED.subject_version
"""
_UPSERT_POLICY = """
INSERT INTO tenant_policy (tenant_id, version, effective_at) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id) DO UPDATE
SET version = EXCLUDED.version, effective_at = EXCLUDED.effective_at
WHERE tenant_policy.effective_at < EXCLUDED.effective_at
"""
_CONSENT = """
SELECT given FROM consent_copy WHERE tenant_id = $1 AND subject_ref = $2 AND purpose = $3
"""
_CONSENTS = "SELECT purpose, given FROM consent_copy WHERE tenant_id = $1 AND subject_ref = $2"
_POLICY = "SELECT version FROM tenant_policy WHERE tenant_id = $1"


async def upsert_decisions(
    conn: Connection,
    tenant_id: UUID,
    rows: Sequence[tuple[str, str, bool, int, str, datetime]],
) -> None:
    """Apply (subject_ref, purpose, given, subject_version, policy_version, decided_at) rows,
    each only where it is newer than the stored one."""
    if rows:
        columns = list(zip(*rows, strict=True))
        await conn.execute(_UPSERT_DECISIONS, tenant_id, *(list(column) for column in columns))


async def upsert_policy(
    conn: Connection, tenant_id: UUID, version: str, effective_at: datetime
) -> None:
    """Record the tenant's policy version in effect, unless a later one is recorded."""
    await conn.execute(_UPSERT_POLICY, tenant_id, version, effective_at)


async def marketing_consent(conn: Connection, tenant_id: UUID, subject_ref: str) -> bool | None:
    """Whether the subject gave (True) or withdrew (False) the `marketing-email` consent;
    None when the consent service never announced a decision of it."""
    given: bool | None = await conn.fetchval(_CONSENT, tenant_id, subject_ref, MARKETING_PURPOSE)
    return given


async def consents_of(conn: Connection, tenant_id: UUID, subject_ref: str) -> dict[str, bool]:
    """Every purpose the subject decided on, and whether consent is given."""
    return {
        row["purpose"]: row["given"] for row in await conn.fetch(_CONSENTS, tenant_id, subject_ref)
    }


async def current_policy_version(conn: Connection, tenant_id: UUID) -> str | None:
    """The tenant's policy version in effect, or None before any took effect."""
    version: str | None = await conn.fetchval(_POLICY, tenant_id)
    return version
