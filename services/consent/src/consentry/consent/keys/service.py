"""API-key rules: the key format, creation (shown once), listing and revocation.

A presented key is `csk_<id>_<secret>`: `id` is 16 characters of lowercase base32 (80
random bits; it names the key in lists, logs and URLs and is not secret), `secret` is 32
random bytes in URL-safe base64 (43 characters). Only SHA-256(secret) is stored.

Why a plain SHA-256 and not a slow password hash (bcrypt, scrypt, Argon2): those exist to
make guessing low-entropy, human-chosen passwords expensive. Our secrets are 256 random
bits; no amount of guessing finds one, however fast the hash, so a slow KDF would add
nothing but milliseconds of CPU to every cache miss. Comparison is constant-time
(`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from uuid import UUID

from consentry.consent.db import tenant_transaction
from consentry.consent.keys import repository
from consentry.consent.keys.models import ApiKey, CreatedApiKey
from consentry.consent.tenants.events import key_issued_event, key_revoked_event
from consentry.eventing import outbox
from consentry.eventing.db import Connection, Pool
from consentry.httpapi.auth import Scope
from consentry.httpapi.keys import KEY_PREFIX, hash_secret, parse_key
from consentry.httpapi.problems import Problem

SECRET_BYTES = 32


def new_key() -> tuple[str, str]:
    """A fresh key id and the full key to present (`csk_<id>_<secret>`)."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


async def create_key(
    conn: Connection,
    *,
    tenant_id: UUID,
    name: str,
    scopes: Sequence[Scope],
    created_by_key: str | None,
) -> CreatedApiKey:
    """Create a key for the tenant in `conn`'s transaction (scoped to the tenant)."""
    key_id, key = new_key()
    parsed = parse_key(key)
    assert parsed is not None
    secret_hash = hash_secret(parsed[1])
    row = await repository.insert(
        conn,
        key_id=key_id,
        tenant_id=tenant_id,
        name=name,
        scopes=sorted({Scope(scope).value for scope in scopes}),
        secret_hash=secret_hash,
        created_by_key=created_by_key,
    )
    # Other services learn the key from the tenant directory (ADR 0008): same transaction.
    await outbox.add(
        conn,
        key_issued_event(
            tenant_id=tenant_id,
            key_id=key_id,
            scopes=row["scopes"],
            secret_hash=secret_hash,
            issued_at=row["created_at"],
        ),
    )
    return CreatedApiKey(**dict(row), key=key)


async def issue_key(
    pool: Pool, *, tenant_id: UUID, name: str, scopes: Sequence[Scope], created_by_key: str
) -> CreatedApiKey:
    """Create a key for the tenant on behalf of the calling key."""
    async with tenant_transaction(pool, tenant_id) as conn:
        return await create_key(
            conn, tenant_id=tenant_id, name=name, scopes=scopes, created_by_key=created_by_key
        )


async def list_keys(pool: Pool, *, tenant_id: UUID) -> list[ApiKey]:
    """The tenant's keys (without secrets), revoked ones too."""
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await repository.list_keys(conn, tenant_id=tenant_id)
    return [ApiKey(**dict(row)) for row in rows]


async def revoke_key(pool: Pool, *, tenant_id: UUID, key_id: str) -> None:
    """Revoke the tenant's key (again is fine, and announced again: the directory's consumers
    treat a repeat as a no-op); 404 problem when the tenant has no such key."""
    async with tenant_transaction(pool, tenant_id) as conn:
        revoked_at = await repository.revoke(conn, tenant_id=tenant_id, key_id=key_id)
        if revoked_at is not None:
            await outbox.add(
                conn, key_revoked_event(tenant_id=tenant_id, key_id=key_id, revoked_at=revoked_at)
            )
    if revoked_at is None:
        raise Problem(
            404, "api-key-not-found", "No such API key", "the tenant has no API key with this id"
        )
