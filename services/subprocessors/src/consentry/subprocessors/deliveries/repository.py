"""SQL for notices and deliveries. Functions receive an open connection; all but the
cross-tenant lookups (`find_delivery`, `due_deliveries`) run tenant-scoped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

# Many notices of one tenant at once (a notice's purposes and recipients as JSON arrays: SQL
# has no arrays of arrays of different lengths). Returns those recorded now.
_INSERT_NOTICES = """
INSERT INTO notices (tenant_id, id, source_event_id, kind, request_id, request_kind,
                     subject_ref, purposes, occurred_at, recipient_ids)
SELECT $1, n.id, n.source_event_id, n.kind, n.request_id, n.request_kind, n.subject_ref,
       ARRAY(SELECT jsonb_array_elements_text(n.purposes)), n.occurred_at,
       ARRAY(SELECT jsonb_array_elements_text(n.recipient_ids)::uuid)
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::jsonb[], $9::timestamptz[], $10::jsonb[])
         AS n(id, source_event_id, kind, request_id, request_kind, subject_ref, purposes,
              occurred_at, recipient_ids)
ORDER BY n.id
ON CONFLICT DO NOTHING
RETURNING id, selected_at
"""
# New deliveries (of many notices of one tenant) are due at once; or, handed to this
# process's sender (`$7`, a lease in seconds), claimed at once as `repository.claim` would
# claim them. Returns what the sender needs to post the new ones (`Claimed`).
_INSERT_DELIVERIES = """
WITH inserted AS (
    INSERT INTO deliveries (tenant_id, id, notice_id, recipient_id, payload, next_attempt_at,
                            deadline_at, attempts, first_attempt_at, last_attempt_at)
    SELECT $1, d.id, d.notice_id, d.recipient_id, d.payload,
           now() + make_interval(secs => coalesce($7, 0)),
           now() + make_interval(secs => $6),
           CASE WHEN $7 IS NULL THEN 0 ELSE 1 END,
           CASE WHEN $7 IS NULL THEN NULL ELSE now() END,
           CASE WHEN $7 IS NULL THEN NULL ELSE now() END
    FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[])
             AS d(notice_id, id, recipient_id, payload)
    ORDER BY d.id
    ON CONFLICT DO NOTHING
    RETURNING id, recipient_id, payload, attempts, deadline_at
)
SELECT i.id, i.recipient_id, i.payload, i.attempts, i.deadline_at, false AS expired,
       r.webhook_url, r.secret_sealed, r.previous_secret_sealed, r.previous_secret_expires_at
FROM inserted AS i JOIN recipients AS r ON r.tenant_id = $1 AND r.id = i.recipient_id
"""
_FIND = "SELECT tenant_id, recipient_id FROM consentry_find_delivery($1)"
_DUE = "SELECT tenant_id, id FROM consentry_due_deliveries($1)"

# Claim due deliveries of one tenant: rows another sender holds are skipped; each claimed
# row's next attempt moves a lease ahead (a crashed sender's claim lapses and is retried).
# A delivered notice whose window has closed is `expired`: not sent again, dead-lettered.
_CLAIM = """
WITH due AS (
    SELECT id, (status = 'delivered' AND deadline_at <= now()) AS expired
    FROM deliveries
    WHERE tenant_id = $1 AND id = ANY ($2::uuid[]) AND next_attempt_at <= now()
    FOR UPDATE SKIP LOCKED
)
UPDATE deliveries AS d SET
    attempts = d.attempts + CASE WHEN due.expired THEN 0 ELSE 1 END,
    next_attempt_at = now() + make_interval(secs => $3),
    first_attempt_at = CASE WHEN due.expired THEN d.first_attempt_at
                            ELSE coalesce(d.first_attempt_at, now()) END,
    last_attempt_at = CASE WHEN due.expired THEN d.last_attempt_at ELSE now() END
FROM due, recipients AS r
WHERE d.id = due.id AND r.tenant_id = d.tenant_id AND r.id = d.recipient_id
RETURNING d.id, d.recipient_id, d.payload, d.status, d.attempts, d.deadline_at,
          due.expired, r.webhook_url, r.secret_sealed, r.previous_secret_sealed,
          r.previous_secret_expires_at
"""
_OPEN = "status IN ('pending', 'delivered')"
# Outcomes are recorded for many deliveries of one tenant at once (arrays), each only while
# the delivery is still open: an acknowledgement that arrived meanwhile wins.
_DELIVERED = f"""
UPDATE deliveries SET status = 'delivered', delivered_at = coalesce(delivered_at, now()),
    last_error = NULL, next_attempt_at = now() + make_interval(secs => $3)
WHERE tenant_id = $1 AND id = ANY ($2::uuid[]) AND {_OPEN}
"""  # noqa: S608 - constant fragments
_FAILED = f"""
UPDATE deliveries AS d SET last_error = f.error, next_attempt_at = f.retry_at
FROM unnest($2::uuid[], $3::text[], $4::timestamptz[]) AS f(id, error, retry_at)
WHERE d.tenant_id = $1 AND d.id = f.id AND d.{_OPEN}
"""  # noqa: S608
_NOTICE_FIELDS = """
d.id, d.recipient_id, d.attempts, d.first_attempt_at, d.acknowledged_at, d.dead_lettered_at,
d.last_error, n.subject_ref, n.request_id, n.kind
"""
_DEAD_LETTER = f"""
UPDATE deliveries AS d SET status = 'dead_lettered', dead_lettered_at = now(),
    flagged_at = now(), last_error = f.error, next_attempt_at = NULL
FROM unnest($2::uuid[], $3::text[]) AS f(id, error), notices AS n
WHERE d.tenant_id = $1 AND d.id = f.id AND d.{_OPEN}
  AND n.tenant_id = d.tenant_id AND n.id = d.notice_id
RETURNING {_NOTICE_FIELDS}
"""  # noqa: S608
# An acknowledgement is recorded once; a late one (after dead-lettering) is recorded too:
# who confirmed matters even after the escalation (the flag stays).
_ACKNOWLEDGE = f"""
UPDATE deliveries AS d SET status = 'acknowledged', acknowledged_at = now(),
    acknowledged_via = $3, delivered_at = coalesce(d.delivered_at, now()),
    next_attempt_at = NULL,
    last_error = CASE WHEN $3 = 'response' THEN NULL ELSE d.last_error END
FROM notices AS n
WHERE d.tenant_id = $1 AND d.id = ANY ($2::uuid[]) AND d.acknowledged_at IS NULL
  AND n.tenant_id = d.tenant_id AND n.id = d.notice_id
RETURNING {_NOTICE_FIELDS}
"""  # noqa: S608
_ACKNOWLEDGED_AT = "SELECT acknowledged_at FROM deliveries WHERE tenant_id = $1 AND id = $2"

_REQUEST_RECIPIENTS = """
SELECT r.id AS recipient_id, r.name, r.role, r.region,
       count(*) AS deliveries,
       count(*) FILTER (WHERE d.status = 'pending') AS pending,
       count(*) FILTER (WHERE d.status = 'delivered') AS delivered,
       count(*) FILTER (WHERE d.status = 'acknowledged') AS acknowledged,
       count(*) FILTER (WHERE d.status = 'dead_lettered') AS dead_lettered,
       sum(d.attempts) AS attempts,
       min(d.first_attempt_at) AS first_notified_at,
       CASE WHEN bool_and(d.delivered_at IS NOT NULL) THEN max(d.delivered_at) END
           AS delivered_at,
       CASE WHEN bool_and(d.acknowledged_at IS NOT NULL) THEN max(d.acknowledged_at) END
           AS acknowledged_at,
       max(d.flagged_at) AS flagged_at
FROM notices AS n
JOIN deliveries AS d ON d.tenant_id = n.tenant_id AND d.notice_id = n.id
JOIN recipients AS r ON r.tenant_id = d.tenant_id AND r.id = d.recipient_id
WHERE n.tenant_id = $1 AND n.request_id = $2 AND ($3::text IS NULL OR n.subject_ref = $3)
GROUP BY r.id, r.name, r.role, r.region
ORDER BY r.name, r.id
"""
_REQUEST_NOTICES = """
SELECT count(*) AS subjects, min(selected_at) AS first_selected_at FROM notices
WHERE tenant_id = $1 AND request_id = $2 AND ($3::text IS NULL OR subject_ref = $3)
"""
_DELIVERY_COLUMNS = """
d.id, d.recipient_id, r.name AS recipient_name, n.kind, n.request_id, n.subject_ref,
d.status, d.attempts, d.created_at, d.first_attempt_at, d.last_attempt_at,
d.next_attempt_at, d.deadline_at, d.delivered_at, d.acknowledged_at, d.acknowledged_via,
d.dead_lettered_at, d.flagged_at, d.last_error
"""
_LIST_DELIVERIES = f"""
SELECT {_DELIVERY_COLUMNS}
FROM deliveries AS d
JOIN notices AS n ON n.tenant_id = d.tenant_id AND n.id = d.notice_id
JOIN recipients AS r ON r.tenant_id = d.tenant_id AND r.id = d.recipient_id
WHERE d.tenant_id = $1
  AND ($2::text IS NULL OR d.status = $2)
  AND ($3::text IS NULL OR n.request_id = $3)
  AND ($4::uuid IS NULL OR d.recipient_id = $4)
  AND ($5::uuid IS NULL OR (d.created_at, d.id) > (
        SELECT a.created_at, a.id FROM deliveries AS a WHERE a.tenant_id = $1 AND a.id = $5))
ORDER BY d.created_at, d.id
LIMIT $6
"""  # noqa: S608
_GET_DELIVERY = f"""
SELECT {_DELIVERY_COLUMNS}
FROM deliveries AS d
JOIN notices AS n ON n.tenant_id = d.tenant_id AND n.id = d.notice_id
JOIN recipients AS r ON r.tenant_id = d.tenant_id AND r.id = d.recipient_id
WHERE d.tenant_id = $1 AND d.id = $2
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class NoticeRow:
    """A notice to record (`insert_notices`)."""

    id: UUID
    source_event_id: str
    kind: str
    request_id: str
    request_kind: str | None
    subject_ref: str
    purposes: Sequence[str]
    occurred_at: datetime
    recipient_ids: Sequence[UUID]


async def insert_notices(
    conn: Connection, *, tenant_id: UUID, notices: Sequence[NoticeRow]
) -> dict[UUID, datetime]:
    """Record notices of one tenant; the selection time of each recorded now (one recorded
    before is left out)."""
    rows = await conn.fetch(
        _INSERT_NOTICES,
        tenant_id,
        [n.id for n in notices],
        [n.source_event_id for n in notices],
        [n.kind for n in notices],
        [n.request_id for n in notices],
        [n.request_kind for n in notices],
        [n.subject_ref for n in notices],
        [json.dumps(list(n.purposes)) for n in notices],
        [n.occurred_at for n in notices],
        [json.dumps([str(r) for r in n.recipient_ids]) for n in notices],
    )
    return {row["id"]: row["selected_at"] for row in rows}


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A delivery to record (`insert_deliveries`)."""

    notice_id: UUID
    id: UUID
    recipient_id: UUID
    payload: str


async def insert_deliveries(
    conn: Connection,
    *,
    tenant_id: UUID,
    deliveries: Sequence[DeliveryRow],
    window_seconds: float,
    lease_seconds: float | None,
) -> list[asyncpg.Record]:
    """Deliveries of one tenant, each retried until `window_seconds` from now: due at once,
    or (`lease_seconds`) claimed for an attempt by the caller's process. The new rows, with
    the recipients' URLs and sealed secrets."""
    if not deliveries:
        return []
    return list(
        await conn.fetch(
            _INSERT_DELIVERIES,
            tenant_id,
            [d.notice_id for d in deliveries],
            [d.id for d in deliveries],
            [d.recipient_id for d in deliveries],
            [d.payload for d in deliveries],
            window_seconds,
            lease_seconds,
        )
    )


async def find_delivery(conn: Connection, delivery_id: UUID) -> asyncpg.Record | None:
    """The tenant and recipient of a delivery, whatever the tenant (or None)."""
    return await conn.fetchrow(_FIND, delivery_id)


async def due_deliveries(conn: Connection, limit: int) -> list[asyncpg.Record]:
    """(tenant_id, id) of deliveries whose attempt is due, oldest first, across tenants."""
    return list(await conn.fetch(_DUE, limit))


async def claim(
    conn: Connection, *, tenant_id: UUID, delivery_ids: Sequence[UUID], lease_seconds: float
) -> list[asyncpg.Record]:
    """Claim those of `delivery_ids` that are still due and not held by another sender."""
    return list(await conn.fetch(_CLAIM, tenant_id, list(delivery_ids), lease_seconds))


async def mark_delivered(
    conn: Connection, *, tenant_id: UUID, delivery_ids: Sequence[UUID], recheck_seconds: float
) -> None:
    """2xx answers without an acknowledgement: check again (resend) after `recheck_seconds`."""
    await conn.execute(_DELIVERED, tenant_id, list(delivery_ids), recheck_seconds)


async def mark_failed(
    conn: Connection,
    *,
    tenant_id: UUID,
    failures: Sequence[tuple[UUID, str, datetime]],
) -> None:
    """Failed attempts (delivery, error, when to retry)."""
    await conn.execute(
        _FAILED,
        tenant_id,
        [failure[0] for failure in failures],
        [failure[1] for failure in failures],
        [failure[2] for failure in failures],
    )


async def dead_letter(
    conn: Connection, *, tenant_id: UUID, failures: Sequence[tuple[UUID, str]]
) -> list[asyncpg.Record]:
    """Give up on and flag those deliveries (delivery, last error) still open."""
    return list(
        await conn.fetch(
            _DEAD_LETTER,
            tenant_id,
            [failure[0] for failure in failures],
            [failure[1] for failure in failures],
        )
    )


async def acknowledge(
    conn: Connection, *, tenant_id: UUID, delivery_ids: Sequence[UUID], via: str
) -> list[asyncpg.Record]:
    """Record acknowledgements; the rows acknowledged now (not those acknowledged before)."""
    return list(await conn.fetch(_ACKNOWLEDGE, tenant_id, list(delivery_ids), via))


async def acknowledged_at(
    conn: Connection, *, tenant_id: UUID, delivery_id: UUID
) -> datetime | None:
    """When the delivery was acknowledged (None: not yet)."""
    moment: datetime | None = await conn.fetchval(_ACKNOWLEDGED_AT, tenant_id, delivery_id)
    return moment


async def request_recipients(
    conn: Connection, *, tenant_id: UUID, request_id: str, subject_ref: str | None
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """The request's notice count and, per selected recipient, its deliveries' summary."""
    notices = await conn.fetchrow(_REQUEST_NOTICES, tenant_id, request_id, subject_ref)
    assert notices is not None
    rows = await conn.fetch(_REQUEST_RECIPIENTS, tenant_id, request_id, subject_ref)
    return notices, list(rows)


async def list_deliveries(
    conn: Connection,
    *,
    tenant_id: UUID,
    status: str | None,
    request_id: str | None,
    recipient_id: UUID | None,
    after: UUID | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Deliveries in creation order, filtered, after the cursor delivery."""
    return list(
        await conn.fetch(
            _LIST_DELIVERIES, tenant_id, status, request_id, recipient_id, after, limit
        )
    )


async def get_delivery(
    conn: Connection, *, tenant_id: UUID, delivery_id: UUID
) -> asyncpg.Record | None:
    """One delivery with its notice and recipient name, or None."""
    return await conn.fetchrow(_GET_DELIVERY, tenant_id, delivery_id)
