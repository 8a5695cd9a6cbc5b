"""SQL for the consent ledger and current state. Functions receive an open connection."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from consentry.consent.consents.models import RecordedDecision
from consentry.eventing.db import Connection
from consentry.eventing.outbox import OutboxColumns

_ALL_CURRENT = """
SELECT s.version, c.purpose, c.status, c.policy_version, c.method, c.source, c.occurred_at,
       c.subject_version, c.updated_at, c.needs_reconsent
FROM subjects s LEFT JOIN consents c USING (tenant_id, subject_ref)
WHERE s.tenant_id = $1 AND s.subject_ref = $2
ORDER BY c.purpose
"""
_SUBJECT = "SELECT version, is_child FROM subjects WHERE tenant_id = $1 AND subject_ref = $2"
# The proof of consent: every decision, oldest first, with the policy version's URL.
_HISTORY = """
SELECT l.event_id, l.subject_version, l.purpose, l.status, l.policy_version, p.url AS policy_url,
       l.method, l.source, l.occurred_at, l.recorded_at, l.gpc, l.client_fingerprint,
       l.receipt_id
FROM consent_ledger l
LEFT JOIN policy_versions p ON p.tenant_id = l.tenant_id AND p.version = l.policy_version
WHERE l.tenant_id = $1 AND l.subject_ref = $2
ORDER BY l.subject_version
"""


async def get_subject(
    conn: Connection, *, tenant_id: UUID, subject_ref: str
) -> asyncpg.Record | None:
    """The subject's version and child flag, or None."""
    return await conn.fetchrow(_SUBJECT, tenant_id, subject_ref)


async def history(conn: Connection, *, tenant_id: UUID, subject_ref: str) -> list[asyncpg.Record]:
    """Every recorded decision of the subject, oldest first."""
    return list(await conn.fetch(_HISTORY, tenant_id, subject_ref))


async def list_current(
    conn: Connection, *, tenant_id: UUID, subject_ref: str
) -> list[asyncpg.Record]:
    """The subject's version with every current decision (no rows: unknown subject)."""
    return list(await conn.fetch(_ALL_CURRENT, tenant_id, subject_ref))


# --- Batched capture: the statements of one group of captures (one tenant, one transaction).

# Creates unseen subjects and locks every subject row of the group, in a fixed order so two
# groups touching the same subjects cannot deadlock. now() is the transaction's timestamp:
# the `updated_at` every row written in this transaction gets.
_LOCK_SUBJECTS = """
INSERT INTO subjects (tenant_id, subject_ref)
SELECT $1, ref FROM unnest($2::text[]) AS ref ORDER BY ref
ON CONFLICT (tenant_id, subject_ref) DO UPDATE SET version = subjects.version
RETURNING subject_ref, version, is_child, now() AS now
"""
_CURRENT_OF_SUBJECTS = """
SELECT subject_ref, purpose, status, policy_version, method, source, occurred_at,
       subject_version, updated_at, needs_reconsent
FROM consents WHERE tenant_id = $1 AND subject_ref = ANY($2::text[])
"""
# One round trip for the group: append every decision to the ledger, fold the last decision
# per subject and purpose into the current state, and set each subject's new version.
_WRITE_GROUP = """
WITH ledger AS (
    INSERT INTO consent_ledger (event_id, tenant_id, subject_ref, subject_version, purpose,
                                status, policy_version, method, source, occurred_at,
                                receipt_id, client_fingerprint, gpc)
    SELECT e, $1, r, v, p, st, pv, m, src, o, rc, fp, g
    FROM unnest($2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::text[], $10::timestamptz[], $11::uuid[], $12::text[],
                $13::bool[]) AS t(e, r, v, p, st, pv, m, src, o, rc, fp, g)
), folded AS (
    INSERT INTO consents (tenant_id, subject_ref, purpose, status, policy_version, method, source,
                          occurred_at, subject_version, event_id, needs_reconsent)
    SELECT $1, r, p, st, pv, m, src, o, v, e, false
    FROM unnest($14::int[]) AS i(n),
         LATERAL (SELECT ($2::uuid[])[n], ($3::text[])[n], ($4::bigint[])[n], ($5::text[])[n],
                         ($6::text[])[n], ($7::text[])[n], ($8::text[])[n], ($9::text[])[n],
                         ($10::timestamptz[])[n]) AS t(e, r, v, p, st, pv, m, src, o)
    ON CONFLICT (tenant_id, subject_ref, purpose) DO UPDATE SET
        status = EXCLUDED.status, policy_version = EXCLUDED.policy_version,
        method = EXCLUDED.method, source = EXCLUDED.source, occurred_at = EXCLUDED.occurred_at,
        subject_version = EXCLUDED.subject_version, event_id = EXCLUDED.event_id,
        needs_reconsent = false, updated_at = now()
), queued AS (
    -- Per-key order needs no advisory lock here: every subject row is locked (above).
    INSERT INTO eventing_outbox (event_id, topic, message_key, event_type, headers, payload)
    SELECT e, t, k, ty, h, p
    FROM unnest($17::uuid[], $18::text[], $19::bytea[], $20::text[], $21::jsonb[], $22::bytea[])
         WITH ORDINALITY AS o(e, t, k, ty, h, p, n)
    ORDER BY n
)
UPDATE subjects s SET version = t.v, updated_at = now()
FROM unnest($15::text[], $16::bigint[]) AS t(r, v)
WHERE s.tenant_id = $1 AND s.subject_ref = t.r
"""
_FLAG_CHILD = """
UPDATE subjects SET is_child = true, child_flagged_at = coalesce(child_flagged_at, now())
WHERE tenant_id = $1 AND subject_ref = $2
"""


async def lock_subjects(
    conn: Connection, *, tenant_id: UUID, subject_refs: list[str]
) -> list[asyncpg.Record]:
    """Create and lock the subjects; rows of (subject_ref, version, is_child, now)."""
    return list(await conn.fetch(_LOCK_SUBJECTS, tenant_id, subject_refs))


async def current_of_subjects(
    conn: Connection, *, tenant_id: UUID, subject_refs: list[str]
) -> list[asyncpg.Record]:
    """Every current decision of the subjects."""
    return list(await conn.fetch(_CURRENT_OF_SUBJECTS, tenant_id, subject_refs))


async def write_group(
    conn: Connection,
    *,
    tenant_id: UUID,
    decisions: list[RecordedDecision],
    last_per_purpose: list[int],
    subject_versions: dict[str, int],
    events: OutboxColumns,
) -> None:
    """Append `decisions` to the ledger; fold the decisions at the 1-based positions
    `last_per_purpose` (the last one per subject and purpose) into the current state; set the
    subjects' versions; queue `events` in the outbox (the subjects must be locked)."""
    await conn.execute(
        _WRITE_GROUP,
        tenant_id,
        [d.event_id for d in decisions],
        [d.subject_ref for d in decisions],
        [d.subject_version for d in decisions],
        [d.purpose for d in decisions],
        [d.status.value for d in decisions],
        [d.policy_version for d in decisions],
        [d.method.value for d in decisions],
        [d.source for d in decisions],
        [d.occurred_at for d in decisions],
        [d.receipt_id for d in decisions],
        [d.client_fingerprint for d in decisions],
        [d.gpc for d in decisions],
        last_per_purpose,
        list(subject_versions),
        list(subject_versions.values()),
        *events,
    )


async def flag_child(conn: Connection, *, tenant_id: UUID, subject_ref: str) -> None:
    """Mark the (locked, existing) subject as a child."""
    await conn.execute(_FLAG_CHILD, tenant_id, subject_ref)
