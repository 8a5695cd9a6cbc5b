"""Which tenants the API serves: those the tenant directory has brought (`tenants`).

A tenant, once announced, is never removed, so a known tenant is remembered for the
process's life; an unknown one is asked about again on the next request (it may arrive any
moment).
"""

from __future__ import annotations

from uuid import UUID

from consentry.eventing.db import Pool, tenant_transaction
from consentry.subprocessors.directory import repository


class KnownTenants:
    """The tenants this service has been told about, looked up on first use."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._known: set[UUID] = set()

    async def known(self, tenant_id: UUID) -> bool:
        """Whether the tenant directory has brought the tenant here."""
        if tenant_id in self._known:
            return True
        async with tenant_transaction(self._pool, tenant_id) as conn:
            exists = await repository.tenant_exists(conn, tenant_id=tenant_id)
        if exists:
            self._known.add(tenant_id)
        return exists
