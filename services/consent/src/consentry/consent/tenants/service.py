"""Tenant rules: subject pseudonyms are HMAC-SHA256 under the tenant's own key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from uuid import UUID

from consentry.consent.tenants import repository
from consentry.eventing.db import Connection, Pool


def normalise_subject_id(subject_id: str) -> str:
    """Unicode NFC, surrounding whitespace removed, e-mail addresses case-folded."""
    value = unicodedata.normalize("NFC", subject_id).strip()
    return value.casefold() if "@" in value else value


def pseudonymise(subject_key: bytes, subject_id: str) -> str:
    """The subject's pseudonymous reference: hex HMAC-SHA256 of the normalised identifier."""
    normalised = normalise_subject_id(subject_id).encode()
    return hmac.new(subject_key, normalised, hashlib.sha256).hexdigest()


async def ensure_tenant(conn: Connection, *, tenant_id: UUID, name: str) -> None:
    """Create the tenant with a fresh random subject key unless it exists."""
    await repository.ensure(
        conn, tenant_id=tenant_id, name=name, subject_key=secrets.token_bytes(32)
    )


class SubjectKeys:
    """Caches each tenant's subject key (keys never change once created)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._keys: dict[UUID, bytes] = {}

    async def get(self, tenant_id: UUID) -> bytes | None:
        """The tenant's subject key, or None for an unknown tenant."""
        key = self._keys.get(tenant_id)
        if key is None:
            async with self._pool.acquire() as conn:
                key = await repository.get_subject_key(conn, tenant_id=tenant_id)
            if key is not None:
                self._keys[tenant_id] = key
        return key
