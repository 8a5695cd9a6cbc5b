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
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from uuid import UUID

from consentry.consent.db import tenant_transaction
from consentry.consent.keys import repository
from consentry.consent.keys.models import ApiKey, CreatedApiKey
from consentry.eventing.db import Connection, Pool
from consentry.httpapi.auth import Scope
from consentry.httpapi.problems import Problem

KEY_PREFIX = "csk_"
SECRET_BYTES = 32
_KEY = re.compile(r"^csk_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$")


def hash_secret(secret: str) -> bytes:
    """SHA-256 of a key's secret part: what is stored and compared."""
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, secret_hash: bytes) -> bool:
    """Whether `secret` hashes to `secret_hash` (constant-time comparison)."""
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def new_key() -> tuple[str, str]:
    """A fresh key id and the full key to present (`csk_<id>_<secret>`)."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def parse_key(key: str) -> tuple[str, str] | None:
    """The id and secret of a well-formed key, or None."""
    match = _KEY.match(key)
    return None if match is None else (match[1], match[2])


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
    row = await repository.insert(
        conn,
        key_id=key_id,
        tenant_id=tenant_id,
        name=name,
        scopes=sorted({Scope(scope).value for scope in scopes}),
        secret_hash=hash_secret(parsed[1]),
        created_by_key=created_by_key,
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
    """Revoke the tenant's key (again is fine); 404 problem when the tenant has no such key."""
    async with tenant_transaction(pool, tenant_id) as conn:
        found = await repository.revoke(conn, tenant_id=tenant_id, key_id=key_id)
    if not found:
        raise Problem(
            404, "api-key-not-found", "No such API key", "the tenant has no API key with this id"
        )
