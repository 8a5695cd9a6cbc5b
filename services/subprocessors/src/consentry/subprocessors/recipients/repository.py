"""SQL for recipients. Functions receive an open, tenant-scoped connection."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

COLUMNS = (
    "id, name, role, region, webhook_url, purposes, data_categories, active, created_at,"
    " updated_at, deactivated_at, secret_rotated_at"
)
_INSERT = f"""
INSERT INTO recipients (tenant_id, id, name, role, region, webhook_url, purposes,
                        data_categories, secret_sealed)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING {COLUMNS}
"""  # noqa: S608 - a constant column list
_LIST = f"""
SELECT {COLUMNS} FROM recipients
WHERE tenant_id = $1 AND ($2::boolean IS NULL OR active = $2)
ORDER BY created_at, id
"""  # noqa: S608
_GET = f"SELECT {COLUMNS} FROM recipients WHERE tenant_id = $1 AND id = $2"  # noqa: S608
# Only given fields change (NULL keeps the column); `active` also sets or clears the
# deactivation time, only when it changes.
_UPDATE = f"""
UPDATE recipients SET
    name = coalesce($3, name),
    role = coalesce($4, role),
    region = coalesce($5, region),
    webhook_url = coalesce($6, webhook_url),
    purposes = coalesce($7, purposes),
    data_categories = coalesce($8, data_categories),
    deactivated_at = CASE
        WHEN $9::boolean IS NULL OR $9 = active THEN deactivated_at
        WHEN $9 THEN NULL
        ELSE now()
    END,
    active = coalesce($9, active),
    updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING {COLUMNS}
"""  # noqa: S608
_ROTATE = f"""
UPDATE recipients SET
    previous_secret_sealed = secret_sealed,
    previous_secret_expires_at = $4,
    secret_sealed = $3,
    secret_rotated_at = now(),
    updated_at = now()
WHERE tenant_id = $1 AND id = $2
RETURNING {COLUMNS}
"""  # noqa: S608
# The active recipients a notice goes to: every one for an erasure; for a withdrawal those
# that receive data for the purpose.
_FOR_ERASURE = "SELECT id FROM recipients WHERE tenant_id = $1 AND active ORDER BY id"
_FOR_PURPOSE = """
SELECT id FROM recipients WHERE tenant_id = $1 AND active AND $2 = ANY (purposes) ORDER BY id
"""
_SECRETS = """
SELECT secret_sealed, previous_secret_sealed, previous_secret_expires_at
FROM recipients WHERE tenant_id = $1 AND id = $2
"""


async def insert(
    conn: Connection,
    *,
    tenant_id: UUID,
    recipient_id: UUID,
    name: str,
    role: str,
    region: str,
    webhook_url: str,
    purposes: list[str],
    data_categories: list[str],
    secret_sealed: bytes,
) -> asyncpg.Record:
    """Register a recipient (UniqueViolationError: an active one has this name)."""
    row = await conn.fetchrow(
        _INSERT,
        tenant_id,
        recipient_id,
        name,
        role,
        region,
        webhook_url,
        purposes,
        data_categories,
        secret_sealed,
    )
    assert row is not None
    return row


async def list_recipients(
    conn: Connection, *, tenant_id: UUID, active: bool | None
) -> list[asyncpg.Record]:
    """The tenant's recipients (only active or inactive ones when `active` is given)."""
    return list(await conn.fetch(_LIST, tenant_id, active))


async def get(conn: Connection, *, tenant_id: UUID, recipient_id: UUID) -> asyncpg.Record | None:
    """One recipient, or None."""
    return await conn.fetchrow(_GET, tenant_id, recipient_id)


async def update(
    conn: Connection,
    *,
    tenant_id: UUID,
    recipient_id: UUID,
    name: str | None,
    role: str | None,
    region: str | None,
    webhook_url: str | None,
    purposes: list[str] | None,
    data_categories: list[str] | None,
    active: bool | None,
) -> asyncpg.Record | None:
    """Change the given fields; None when there is no such recipient."""
    return await conn.fetchrow(
        _UPDATE,
        tenant_id,
        recipient_id,
        name,
        role,
        region,
        webhook_url,
        purposes,
        data_categories,
        active,
    )


async def rotate(
    conn: Connection,
    *,
    tenant_id: UUID,
    recipient_id: UUID,
    secret_sealed: bytes,
    previous_expires_at: datetime | None,
) -> asyncpg.Record | None:
    """Replace the secret, keeping the old one until `previous_expires_at`; None if absent."""
    return await conn.fetchrow(_ROTATE, tenant_id, recipient_id, secret_sealed, previous_expires_at)


async def for_erasure(conn: Connection, *, tenant_id: UUID) -> list[UUID]:
    """Every active recipient of the tenant."""
    return [row["id"] for row in await conn.fetch(_FOR_ERASURE, tenant_id)]


async def for_purpose(conn: Connection, *, tenant_id: UUID, purpose: str) -> list[UUID]:
    """The active recipients that receive data for `purpose`."""
    return [row["id"] for row in await conn.fetch(_FOR_PURPOSE, tenant_id, purpose)]


async def sealed_secrets(
    conn: Connection, *, tenant_id: UUID, recipient_id: UUID
) -> asyncpg.Record | None:
    """The recipient's sealed secret(s), or None."""
    return await conn.fetchrow(_SECRETS, tenant_id, recipient_id)
