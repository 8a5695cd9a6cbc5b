"""SQL for policy versions and re-consent. Functions receive an open, tenant-scoped connection
(except `due_versions`, which asks the SECURITY DEFINER function of migration 0004)."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

# Serialises publications of one tenant (the order check and the comparison with the
# previous version must see every earlier publication). Key space: hash of 'policy:<tenant>'.
_LOCK_TENANT = "SELECT pg_advisory_xact_lock(hashtextextended('policy:' || $1::uuid::text, 0))"
_CALENDAR = "SELECT holiday_country, timezone FROM tenants WHERE id = $1"
_EXISTS = "SELECT EXISTS (SELECT 1 FROM policy_versions WHERE tenant_id = $1 AND version = $2)"
_KNOWN_PURPOSES = "SELECT name FROM purposes WHERE tenant_id = $1 AND name = ANY($2::text[])"
_LATEST = """
SELECT version, effective_on FROM policy_versions WHERE tenant_id = $1
ORDER BY effective_on DESC LIMIT 1
"""
_NOTICES = """
SELECT purpose, notice_sha256 FROM policy_version_purposes WHERE tenant_id = $1 AND version = $2
"""
_INSERT_VERSION = """
INSERT INTO policy_versions (tenant_id, version, url, published_at, announced_on, effective_on,
                             effective_at, previous_version, changed_purposes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
_INSERT_PURPOSES = """
INSERT INTO policy_version_purposes (tenant_id, version, purpose, notice, notice_sha256)
SELECT $1, $2, p, n, h FROM unnest($3::text[], $4::text[], $5::bytea[]) AS t(p, n, h)
"""
_VERSIONS = """
SELECT v.version, v.url, v.published_at, v.announced_on, v.effective_on, v.effective_at,
       v.activated_at, v.previous_version, v.changed_purposes,
       coalesce(json_agg(json_build_object('purpose', p.purpose, 'notice', p.notice,
                                           'notice_sha256', encode(p.notice_sha256, 'hex'))
                         ORDER BY p.purpose) FILTER (WHERE p.purpose IS NOT NULL),
                '[]') AS purposes
FROM policy_versions v
LEFT JOIN policy_version_purposes p USING (tenant_id, version)
WHERE v.tenant_id = $1 AND ($2::text IS NULL OR v.version = $2)
GROUP BY v.tenant_id, v.version
ORDER BY v.effective_on
"""
# What the policy cache holds: purposes, and versions with the hash of each notice.
_RULE_PURPOSES = "SELECT name, legal_basis, always_on FROM purposes WHERE tenant_id = $1"
_RULE_VERSIONS = """
SELECT v.version, v.effective_at, v.url,
       coalesce(array_agg(p.purpose ORDER BY p.purpose) FILTER (WHERE p.purpose IS NOT NULL),
                '{}') AS purposes,
       coalesce(array_agg(p.notice_sha256 ORDER BY p.purpose) FILTER (WHERE p.purpose IS NOT NULL),
                '{}') AS digests
FROM policy_versions v
LEFT JOIN policy_version_purposes p USING (tenant_id, version)
WHERE v.tenant_id = $1
GROUP BY v.tenant_id, v.version, v.url
ORDER BY v.effective_at
"""

# --- Activation
_DUE = "SELECT tenant_id, version FROM consentry_due_policy_versions($1)"
# The version row lock serialises activation chunks of one version across schedulers.
_LOCK_VERSION = """
SELECT version, effective_on, effective_at, activated_at, changed_purposes
FROM policy_versions WHERE tenant_id = $1 AND version = $2
FOR UPDATE
"""
_CONSENT_PURPOSES = """
SELECT name FROM purposes WHERE tenant_id = $1 AND name = ANY($2::text[]) AND requires_consent
ORDER BY name
"""
_VERSIONS_FROM = "SELECT version FROM policy_versions WHERE tenant_id = $1 AND effective_on >= $2"
# Consents to flag: given, for a changed purpose, under a version earlier than the activated
# one (any version not effective on or after its day, including versions never published),
# and not yet flagged for it. The subject scan walks the primary key in subject order.
_NEXT_SUBJECTS = """
SELECT DISTINCT subject_ref FROM consents
WHERE tenant_id = $1 AND status = 'given' AND purpose = ANY($2::text[])
  AND policy_version <> ALL($3::text[]) AND reconsent_policy_version IS DISTINCT FROM $4
  AND subject_ref > $5
ORDER BY subject_ref LIMIT $6
"""
# Subject rows are locked in subject order, as the consent writer locks them: no deadlock.
_LOCK_SUBJECTS = """
SELECT subject_ref, version FROM subjects
WHERE tenant_id = $1 AND subject_ref = ANY($2::text[])
ORDER BY subject_ref
FOR UPDATE
"""
# The same conditions as _NEXT_SUBJECTS, for the subjects now locked.
_FLAG = """
UPDATE consents SET needs_reconsent = true, reconsent_policy_version = $4, updated_at = now()
WHERE tenant_id = $1 AND status = 'given' AND purpose = ANY($2::text[])
  AND policy_version <> ALL($3::text[]) AND reconsent_policy_version IS DISTINCT FROM $4
  AND subject_ref = ANY($5::text[])
RETURNING subject_ref, purpose, policy_version
"""
_SET_SUBJECT_VERSIONS = """
UPDATE subjects s SET version = t.v, updated_at = now()
FROM unnest($2::text[], $3::bigint[]) AS t(r, v)
WHERE s.tenant_id = $1 AND s.subject_ref = t.r
"""
_COUNT_FLAGGED = """
SELECT count(*) FROM consents WHERE tenant_id = $1 AND reconsent_policy_version = $2
"""
_MARK_ACTIVATED = """
UPDATE policy_versions SET activated_at = $3 WHERE tenant_id = $1 AND version = $2
"""


async def lock_tenant_policies(conn: Connection, *, tenant_id: UUID) -> None:
    """Serialise this transaction with every other publication of the tenant."""
    await conn.execute(_LOCK_TENANT, tenant_id)


async def tenant_calendar(conn: Connection, *, tenant_id: UUID) -> asyncpg.Record | None:
    """The tenant's (holiday_country, timezone), or None for an unknown tenant."""
    return await conn.fetchrow(_CALENDAR, tenant_id)


async def version_exists(conn: Connection, *, tenant_id: UUID, version: str) -> bool:
    """Whether the tenant has published `version`."""
    exists: bool = await conn.fetchval(_EXISTS, tenant_id, version)
    return exists


async def known_purposes(conn: Connection, *, tenant_id: UUID, names: list[str]) -> set[str]:
    """The subset of `names` that are purposes of the tenant."""
    return {row["name"] for row in await conn.fetch(_KNOWN_PURPOSES, tenant_id, names)}


async def latest_version(conn: Connection, *, tenant_id: UUID) -> asyncpg.Record | None:
    """The version with the latest effective day (version, effective_on), or None."""
    return await conn.fetchrow(_LATEST, tenant_id)


async def notices(conn: Connection, *, tenant_id: UUID, version: str) -> dict[str, bytes]:
    """Purpose -> SHA-256 of its notice text in `version`."""
    rows = await conn.fetch(_NOTICES, tenant_id, version)
    return {row["purpose"]: bytes(row["notice_sha256"]) for row in rows}


async def insert_version(
    conn: Connection,
    *,
    tenant_id: UUID,
    version: str,
    url: str,
    published_at: datetime,
    announced_on: date,
    effective_on: date,
    effective_at: datetime,
    previous_version: str | None,
    changed_purposes: list[str],
    purposes: list[tuple[str, str, bytes]],
) -> None:
    """Insert a version and its (purpose, notice, notice SHA-256) rows."""
    await conn.execute(
        _INSERT_VERSION,
        tenant_id,
        version,
        url,
        published_at,
        announced_on,
        effective_on,
        effective_at,
        previous_version,
        changed_purposes,
    )
    await conn.execute(
        _INSERT_PURPOSES,
        tenant_id,
        version,
        [p[0] for p in purposes],
        [p[1] for p in purposes],
        [p[2] for p in purposes],
    )


async def list_versions(
    conn: Connection, *, tenant_id: UUID, version: str | None = None
) -> list[asyncpg.Record]:
    """Every version (or just `version`) by effective day; `purposes` is a JSON array of
    {purpose, notice, notice_sha256 (hex)}."""
    return list(await conn.fetch(_VERSIONS, tenant_id, version))


async def rule_purposes(conn: Connection, *, tenant_id: UUID) -> list[asyncpg.Record]:
    """(name, legal_basis, always_on) of every purpose."""
    return list(await conn.fetch(_RULE_PURPOSES, tenant_id))


async def rule_versions(conn: Connection, *, tenant_id: UUID) -> list[asyncpg.Record]:
    """(version, effective_at, url, purposes, digests) of every version, by effective instant."""
    return list(await conn.fetch(_RULE_VERSIONS, tenant_id))


async def due_versions(conn: Connection, *, due_by: datetime) -> list[asyncpg.Record]:
    """(tenant_id, version) of every tenant's versions due by `due_by` and not activated."""
    return list(await conn.fetch(_DUE, due_by))


async def lock_version(conn: Connection, *, tenant_id: UUID, version: str) -> asyncpg.Record | None:
    """Lock a version row for this transaction; None if there is none."""
    return await conn.fetchrow(_LOCK_VERSION, tenant_id, version)


async def consent_purposes(conn: Connection, *, tenant_id: UUID, names: list[str]) -> list[str]:
    """The subset of `names` whose legal basis is consent."""
    return [row["name"] for row in await conn.fetch(_CONSENT_PURPOSES, tenant_id, names)]


async def versions_from(conn: Connection, *, tenant_id: UUID, effective_on: date) -> list[str]:
    """Versions effective on `effective_on` or later."""
    return [row["version"] for row in await conn.fetch(_VERSIONS_FROM, tenant_id, effective_on)]


async def next_subjects(
    conn: Connection,
    *,
    tenant_id: UUID,
    purposes: list[str],
    current_versions: list[str],
    version: str,
    after: str,
    limit: int,
) -> list[str]:
    """Up to `limit` subjects after `after` with consents still to flag for `version`."""
    rows = await conn.fetch(
        _NEXT_SUBJECTS, tenant_id, purposes, current_versions, version, after, limit
    )
    return [row["subject_ref"] for row in rows]


async def lock_subjects(
    conn: Connection, *, tenant_id: UUID, subject_refs: list[str]
) -> dict[str, int]:
    """Lock the subjects' rows in subject order; subject_ref -> version."""
    rows = await conn.fetch(_LOCK_SUBJECTS, tenant_id, subject_refs)
    return {row["subject_ref"]: row["version"] for row in rows}


async def flag_consents(
    conn: Connection,
    *,
    tenant_id: UUID,
    purposes: list[str],
    current_versions: list[str],
    version: str,
    subject_refs: list[str],
) -> list[asyncpg.Record]:
    """Flag the (locked) subjects' consents for `version`; rows of what was flagged."""
    return list(
        await conn.fetch(_FLAG, tenant_id, purposes, current_versions, version, subject_refs)
    )


async def set_subject_versions(
    conn: Connection, *, tenant_id: UUID, versions: dict[str, int]
) -> None:
    """Set the (locked) subjects' versions."""
    await conn.execute(_SET_SUBJECT_VERSIONS, tenant_id, list(versions), list(versions.values()))


async def count_flagged(conn: Connection, *, tenant_id: UUID, version: str) -> int:
    """How many consents carry `version` as the version that asked for re-consent."""
    count: int = await conn.fetchval(_COUNT_FLAGGED, tenant_id, version)
    return count


async def mark_activated(conn: Connection, *, tenant_id: UUID, version: str, at: datetime) -> None:
    """Record that the version's activation is complete."""
    await conn.execute(_MARK_ACTIVATED, tenant_id, version, at)
