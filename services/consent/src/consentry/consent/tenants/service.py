"""Tenant rules: creation (with seeding hooks) and subject pseudonyms under the tenant's key.

A tenant's subject key is 32 random bytes, sealed under the master key with the context
`tenant:<id>:subject-key` (`subject_key_context`), and opened only in memory (`SubjectKeys`).

Seeding hook: `TENANT_SEEDERS` is a list of `async def seed(conn, tenant_id) -> None`
functions that other domains append to (e.g. default purposes, a receipt signing key). Each
runs inside the transaction that creates the tenant, with the connection already scoped to
the new tenant (RLS), so a failing seeder creates no tenant. `ensure_tenant` runs them on
every call, also for a tenant that exists, so a seeder added later reaches older tenants:
seeders must therefore be idempotent (insert-if-missing), also when two processes run them
at once.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from uuid import UUID

from consentry.consent.db import set_tenant, tenant_transaction
from consentry.consent.sealing import Sealer
from consentry.consent.tenants import repository
from consentry.consent.tenants.events import provisioned_event
from consentry.consent.tenants.models import TENANT_NAME_MAX, TenantInfo
from consentry.eventing import outbox
from consentry.eventing.db import Connection, Pool
from consentry.eventing.directory import (
    normalise_subject_id,
    pseudonymise,
    pseudonymise_many,
    subject_key_context,
)

SUBJECT_KEY_BYTES = 32

__all__ = [
    "normalise_subject_id",
    "pseudonymise",
    "pseudonymise_many",
    "subject_key_context",
]

TenantSeeder = Callable[[Connection, UUID], Awaitable[None]]
TENANT_SEEDERS: list[TenantSeeder] = []
"""Run in order inside the transaction that creates (or ensures) a tenant; idempotent."""


class TenantExistsError(ValueError):
    """A tenant with this id exists already."""


def _checked_name(name: str) -> str:
    value = name.strip()
    if not 1 <= len(value) <= TENANT_NAME_MAX or not value.isprintable():
        raise ValueError(f"a tenant name is 1 to {TENANT_NAME_MAX} printable characters")
    return value


async def _insert(
    conn: Connection, *, sealer: Sealer, tenant_id: UUID, name: str, directory: Sealer | None
) -> bool:
    await set_tenant(conn, tenant_id)  # raises unless in a transaction; RLS needs it
    subject_key = secrets.token_bytes(SUBJECT_KEY_BYTES)
    sealed = sealer.seal(subject_key, context=subject_key_context(tenant_id))
    created = await repository.insert(
        conn, tenant_id=tenant_id, name=_checked_name(name), subject_key_sealed=sealed
    )
    if created and directory is not None:
        # Announced in the creating transaction (ADR 0008): the only moment the clear key
        # is at hand without opening it again.
        row = await repository.get(conn, tenant_id=tenant_id)
        assert row is not None
        await outbox.add(
            conn,
            provisioned_event(
                tenant_id=tenant_id,
                name=row["name"],
                subject_key=subject_key,
                directory=directory,
                provisioned_at=row["created_at"],
            ),
        )
    return created


async def _seed(conn: Connection, tenant_id: UUID) -> None:
    for seeder in TENANT_SEEDERS:
        await seeder(conn, tenant_id)


async def create_tenant(
    conn: Connection,
    *,
    sealer: Sealer,
    name: str,
    tenant_id: UUID | None = None,
    directory: Sealer | None = None,
) -> UUID:
    """Create a tenant with a fresh sealed subject key and seed it, in `conn`'s transaction.

    With `directory` (the directory key's sealer) the tenant is announced on the tenant
    topic in the same transaction (`TenantProvisioned`, ADR 0008); every process that
    creates tenants passes it (None only where no other service needs the tenant, e.g. tests
    of other domains; `publish-directory` announces such tenants later).

    The rest of the transaction is scoped to the new tenant. Raises `TenantExistsError` for
    an id in use and `ValueError` for a bad name.
    """
    tenant_id = tenant_id or uuid.uuid4()
    if not await _insert(conn, sealer=sealer, tenant_id=tenant_id, name=name, directory=directory):
        raise TenantExistsError(f"tenant {tenant_id} exists already")
    await _seed(conn, tenant_id)
    return tenant_id


async def ensure_tenant(
    conn: Connection,
    *,
    sealer: Sealer,
    tenant_id: UUID,
    name: str,
    directory: Sealer | None = None,
) -> bool:
    """Create the tenant unless it exists (it keeps its key), then seed it; True if created.

    A tenant it creates is announced as by `create_tenant` when `directory` is given. Runs
    in `conn`'s open transaction, which it scopes to `tenant_id`.
    """
    created = await _insert(
        conn, sealer=sealer, tenant_id=tenant_id, name=name, directory=directory
    )
    await _seed(conn, tenant_id)
    return created


async def get_tenant(pool: Pool, *, tenant_id: UUID) -> TenantInfo | None:
    """The tenant's id, name and creation time, or None for an unknown tenant."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repository.get(conn, tenant_id=tenant_id)
    return None if row is None else TenantInfo(**dict(row))


class SubjectKeys:
    """Each tenant's subject key, unsealed once and kept in memory (keys never change)."""

    def __init__(self, pool: Pool, sealer: Sealer) -> None:
        self._pool = pool
        self._sealer = sealer
        self._keys: dict[UUID, bytes] = {}

    async def get(self, tenant_id: UUID) -> bytes | None:
        """The tenant's subject key, or None for an unknown tenant."""
        key = self._keys.get(tenant_id)
        if key is None:
            async with tenant_transaction(self._pool, tenant_id) as conn:
                sealed = await repository.get_subject_key_sealed(conn, tenant_id=tenant_id)
            if sealed is None:
                return None
            key = self._sealer.open(sealed, context=subject_key_context(tenant_id))
            self._keys[tenant_id] = key
        return key


class TenantNames:
    """Each tenant's name (the controller named on receipts), read once per process."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._names: dict[UUID, str] = {}

    async def get(self, tenant_id: UUID) -> str:
        """The tenant's name ('' for an unknown tenant, which is not cached)."""
        name = self._names.get(tenant_id)
        if name is None:
            info = await get_tenant(self._pool, tenant_id=tenant_id)
            if info is None:
                return ""
            name = self._names[tenant_id] = info.name
        return name
