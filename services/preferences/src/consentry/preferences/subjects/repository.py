"""SQL for subjects and their preferences. Functions receive an open, tenant-scoped connection."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

_CREATE = "INSERT INTO subjects (tenant_id, subject_ref) VALUES ($1, $2) ON CONFLICT DO NOTHING"
_LOCK_EXISTING = """
SELECT version, all_marketing_unsubscribed_at, data_key_sealed, contact_email_sealed
FROM subjects WHERE tenant_id = $1 AND subject_ref = $2 FOR UPDATE
"""
_GET = """
SELECT version, all_marketing_unsubscribed_at, data_key_sealed, contact_email_sealed
FROM subjects WHERE tenant_id = $1 AND subject_ref = $2
"""
_PREFERENCES = """
SELECT topic, channel, subscribed FROM preferences WHERE tenant_id = $1 AND subject_ref = $2
"""
_UPSERT_PREFERENCES = """
INSERT INTO preferences (tenant_id, subject_ref, topic, channel, subscribed, method)
SELECT $1, $2, topic, channel, subscribed, $6
FROM unnest($3::text[], $4::text[], $5::boolean[]) AS c (topic, channel, subscribed)
ON CONFLICT (tenant_id, subject_ref, topic, channel) DO UPDATE
SET subscribed = EXCLUDED.subscribed, method = EXCLUDED.method, updated_at = now()
"""
_BUMP = """
UPDATE subjects
SET version = version + 1, updated_at = now(),
    all_marketing_unsubscribed_at = CASE WHEN $3 THEN now() WHEN $4 THEN NULL
                                         ELSE all_marketing_unsubscribed_at END
WHERE tenant_id = $1 AND subject_ref = $2
RETURNING version
"""
_SET_CONTACT = """
UPDATE subjects SET data_key_sealed = $3, contact_email_sealed = $4, updated_at = now()
WHERE tenant_id = $1 AND subject_ref = $2
"""
_MARKETING_CONSENT = """
SELECT given FROM consent_copy
WHERE tenant_id = $1 AND subject_ref = $2 AND purpose = 'marketing-email'
"""


async def lock_subject(
    conn: Connection, *, tenant_id: UUID, subject_ref: str, create: bool = True
) -> asyncpg.Record | None:
    """The subject's row, locked for this transaction (created first unless `create` is off):
    changes of one subject serialise here."""
    if create:
        await conn.execute(_CREATE, tenant_id, subject_ref)
    return await conn.fetchrow(_LOCK_EXISTING, tenant_id, subject_ref)


async def get_subject(
    conn: Connection, *, tenant_id: UUID, subject_ref: str
) -> asyncpg.Record | None:
    """The subject's row, or None."""
    return await conn.fetchrow(_GET, tenant_id, subject_ref)


async def preferences(
    conn: Connection, *, tenant_id: UUID, subject_ref: str
) -> dict[tuple[str, str], bool]:
    """The subject's stored preferences by (topic, channel)."""
    rows = await conn.fetch(_PREFERENCES, tenant_id, subject_ref)
    return {(row["topic"], row["channel"]): row["subscribed"] for row in rows}


async def upsert_preferences(
    conn: Connection,
    *,
    tenant_id: UUID,
    subject_ref: str,
    changes: Sequence[tuple[str, str, bool]],
    method: str,
) -> None:
    """Store (topic, channel, subscribed) choices."""
    topics, channels, subscribed = zip(*changes, strict=True) if changes else ((), (), ())
    await conn.execute(
        _UPSERT_PREFERENCES,
        tenant_id,
        subject_ref,
        list(topics),
        list(channels),
        list(subscribed),
        method,
    )


async def bump_version(
    conn: Connection,
    *,
    tenant_id: UUID,
    subject_ref: str,
    left_all_marketing: bool,
    rejoined_marketing: bool,
) -> int:
    """Count one change of the subject; set or clear its all-marketing opt-out."""
    version: int = await conn.fetchval(
        _BUMP, tenant_id, subject_ref, left_all_marketing, rejoined_marketing
    )
    return version


async def set_contact(
    conn: Connection,
    *,
    tenant_id: UUID,
    subject_ref: str,
    data_key_sealed: bytes | None,
    contact_sealed: bytes | None,
) -> None:
    """Store the subject's sealed data key and sealed e-mail address (or clear both)."""
    await conn.execute(_SET_CONTACT, tenant_id, subject_ref, data_key_sealed, contact_sealed)


async def marketing_consent(conn: Connection, *, tenant_id: UUID, subject_ref: str) -> bool | None:
    """The `marketing-email` consent in this service's copy, or None when none is known."""
    given: bool | None = await conn.fetchval(_MARKETING_CONSENT, tenant_id, subject_ref)
    return given
