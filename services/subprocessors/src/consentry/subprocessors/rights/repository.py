"""SQL of a subject's part of an access export. Functions receive an open, tenant-scoped
connection. Nothing here reads a webhook URL or a signing secret."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

_RECIPIENT = "r.id, r.name, r.role, r.region, r.purposes, r.data_categories"
# The notices about the subject (erasure requests, consent withdrawals), oldest first
# (index notices_by_subject, migration 0002).
_NOTICES = """
SELECT id, kind, request_id, request_kind, purposes, occurred_at, selected_at
FROM notices WHERE tenant_id = $1 AND subject_ref = $2
ORDER BY occurred_at, selected_at, id
"""
# Each notice's deliveries with the recipient as registered now.
_DELIVERIES = f"""
SELECT d.notice_id, {_RECIPIENT}, d.status, d.attempts, d.first_attempt_at, d.delivered_at,
       d.acknowledged_at, d.dead_lettered_at
FROM notices AS n
JOIN deliveries AS d ON d.tenant_id = n.tenant_id AND d.notice_id = n.id
JOIN recipients AS r ON r.tenant_id = d.tenant_id AND r.id = d.recipient_id
WHERE n.tenant_id = $1 AND n.subject_ref = $2
ORDER BY r.name, r.id
"""  # noqa: S608 - a constant column list
# The recipients that receive the tenant's data now (deactivated ones receive nothing more).
_ACTIVE_RECIPIENTS = f"""
SELECT {_RECIPIENT}, r.created_at FROM recipients AS r
WHERE r.tenant_id = $1 AND r.active
ORDER BY r.name, r.id
"""  # noqa: S608


async def subject_notices(
    conn: Connection, *, tenant_id: UUID, subject_ref: str
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """The subject's notices and their deliveries (with each delivery's recipient)."""
    notices = await conn.fetch(_NOTICES, tenant_id, subject_ref)
    deliveries = await conn.fetch(_DELIVERIES, tenant_id, subject_ref) if notices else []
    return list(notices), list(deliveries)


async def active_recipients(conn: Connection, *, tenant_id: UUID) -> list[asyncpg.Record]:
    """The tenant's active recipients."""
    return list(await conn.fetch(_ACTIVE_RECIPIENTS, tenant_id))
