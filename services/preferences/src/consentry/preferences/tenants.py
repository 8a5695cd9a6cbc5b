"""Each tenant's secrets in this service, opened once and kept in memory.

The tenant directory follower (`directory/`) writes the `tenants` rows: the subject key (same
as the consent service's, so subject references agree across services), this service's own
key-encryption key (KEK: seals the per-subject data keys) and link key (HMAC key of the
unsubscribe and preference-center tokens), each sealed under the master key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from consentry.eventing.db import Connection, Pool, tenant_transaction
from consentry.eventing.directory import pseudonymise, subject_key_context
from consentry.eventing.sealing import Sealer

_SECRETS = """
SELECT name, subject_key_sealed, kek_sealed, link_key_sealed FROM tenants WHERE id = $1
"""


def kek_context(tenant_id: UUID) -> str:
    """The sealing context of a tenant's key-encryption key."""
    return f"tenant:{tenant_id}:kek"


def link_key_context(tenant_id: UUID) -> str:
    """The sealing context of a tenant's link (token) key."""
    return f"tenant:{tenant_id}:link-key"


@dataclass(frozen=True)
class TenantKeys:
    """A tenant's opened secrets."""

    tenant_id: UUID
    name: str
    subject_key: bytes
    kek: bytes
    link_key: bytes

    def subject_ref(self, subject_id: str) -> str:
        """The subject's pseudonymous reference (the same in every service)."""
        return pseudonymise(self.subject_key, subject_id)

    @property
    def kek_sealer(self) -> Sealer:
        """Seals and opens this tenant's per-subject data keys."""
        return Sealer(self.kek)

    @property
    def delivery_key(self) -> bytes:
        """The key the tenant's sending system decrypts list contacts with (HKDF of the KEK)."""
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"consentry delivery key v1"
        ).derive(self.kek)

    @property
    def delivery_key_id(self) -> str:
        """A short public id of the delivery key (the first 8 bytes of its SHA-256, hex)."""
        return hashlib.sha256(self.delivery_key).hexdigest()[:16]


async def load_keys(conn: Connection, sealer: Sealer, tenant_id: UUID) -> TenantKeys | None:
    """Open the tenant's secrets on a tenant-scoped connection; None for an unknown tenant."""
    row = await conn.fetchrow(_SECRETS, tenant_id)
    if row is None:
        return None
    return TenantKeys(
        tenant_id=tenant_id,
        name=row["name"],
        subject_key=sealer.open(row["subject_key_sealed"], context=subject_key_context(tenant_id)),
        kek=sealer.open(row["kek_sealed"], context=kek_context(tenant_id)),
        link_key=sealer.open(row["link_key_sealed"], context=link_key_context(tenant_id)),
    )


class TenantKeyring:
    """Every tenant's opened secrets, loaded on first use (they never change once written)."""

    def __init__(self, pool: Pool, sealer: Sealer) -> None:
        self._pool = pool
        self._sealer = sealer
        self._keys: dict[UUID, TenantKeys] = {}

    async def get(self, tenant_id: UUID) -> TenantKeys | None:
        """The tenant's secrets, or None while the tenant directory has not announced it."""
        keys = self._keys.get(tenant_id)
        if keys is None:
            async with tenant_transaction(self._pool, tenant_id) as conn:
                keys = await load_keys(conn, self._sealer, tenant_id)
            if keys is None:
                return None
            self._keys[tenant_id] = keys
        return keys
