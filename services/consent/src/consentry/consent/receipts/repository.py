"""SQL for receipt keys. Functions receive an open connection (tenant-scoped unless noted)."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

# Serialises key creation and rotation per tenant, so concurrent callers never race for the
# one active slot (the partial unique index would refuse the loser). Transaction-scoped.
_LOCK_KEYS = "SELECT pg_advisory_xact_lock(hashtextextended('consentry.receipt-keys:' || $1, 0))"
_ACTIVE_KID = "SELECT kid FROM receipt_keys WHERE tenant_id = $1 AND retired_at IS NULL"
_ACTIVE = """
SELECT kid, private_key_sealed FROM receipt_keys WHERE tenant_id = $1 AND retired_at IS NULL
"""
# Times by clock_timestamp(), not now() (the transaction's start): a rotation that waited on
# the lock for another one must not retire that one's key "before" it was created.
_INSERT = """
INSERT INTO receipt_keys (tenant_id, kid, public_jwk, private_key_sealed, created_at)
VALUES ($1, $2, $3::jsonb, $4, clock_timestamp())
"""
_RETIRE_ACTIVE = """
UPDATE receipt_keys SET retired_at = clock_timestamp()
WHERE tenant_id = $1 AND retired_at IS NULL
RETURNING kid
"""
_PUBLIC_JWKS = """
SELECT public_jwk::text AS jwk FROM receipt_keys WHERE tenant_id = $1 ORDER BY created_at, kid
"""
# Not tenant-scoped: the SECURITY DEFINER function scopes itself (migration 0005).
_PUBLIC_JWKS_OF = "SELECT consentry_receipt_jwks($1)::text"


async def lock_keys(conn: Connection, *, tenant_id: UUID) -> None:
    """Hold the tenant's receipt-key lock until the transaction ends."""
    await conn.execute(_LOCK_KEYS, str(tenant_id))


async def active_kid(conn: Connection, *, tenant_id: UUID) -> str | None:
    """The kid of the tenant's active key, or None."""
    kid: str | None = await conn.fetchval(_ACTIVE_KID, tenant_id)
    return kid


async def active_key(conn: Connection, *, tenant_id: UUID) -> asyncpg.Record | None:
    """The active key's kid and sealed private key, or None."""
    return await conn.fetchrow(_ACTIVE, tenant_id)


async def insert_key(
    conn: Connection, *, tenant_id: UUID, kid: str, public_jwk: dict[str, str], sealed: bytes
) -> None:
    """Store a new active key (the caller retired the previous one)."""
    await conn.execute(_INSERT, tenant_id, kid, json.dumps(public_jwk), sealed)


async def retire_active(conn: Connection, *, tenant_id: UUID) -> str | None:
    """Retire the active key; return its kid (None when there was none)."""
    kid: str | None = await conn.fetchval(_RETIRE_ACTIVE, tenant_id)
    return kid


async def public_jwks(conn: Connection, *, tenant_id: UUID) -> list[dict[str, Any]]:
    """The public JWK of every key of the tenant, oldest first."""
    rows = await conn.fetch(_PUBLIC_JWKS, tenant_id)
    return [json.loads(row["jwk"]) for row in rows]


async def public_jwks_of(conn: Connection, *, tenant_id: UUID) -> list[dict[str, Any]] | None:
    """Any tenant's public JWKs without a tenant scope; None when the tenant does not exist."""
    value: str | None = await conn.fetchval(_PUBLIC_JWKS_OF, tenant_id)
    if value is None:
        return None
    keys: list[dict[str, Any]] = json.loads(value)
    return keys
