"""Tenant administration on the consent database as its owner: what `python -m
consentry.consent create-tenant` / `create-api-key` and the `consentry` CLI's `tenant create` /
`key create` do (one implementation for both)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

# Imported for its side effect: the seeders of every domain (the default purposes) register in
# TENANT_SEEDERS when their module is imported; without it a tenant would be created unseeded.
import consentry.consent.app  # noqa: F401
from consentry.consent.db import set_tenant
from consentry.consent.keys.models import CreatedApiKey
from consentry.consent.keys.service import create_key
from consentry.consent.settings import TenantAdminSettings
from consentry.consent.tenants import repository
from consentry.consent.tenants.service import create_tenant
from consentry.httpapi.auth import Scope

FIRST_KEY_NAME = "first admin key"


async def create_tenant_with_key(
    settings: TenantAdminSettings,
    *,
    name: str,
    tenant_id: uuid.UUID | None,
    scopes: Sequence[Scope],
) -> tuple[uuid.UUID, CreatedApiKey]:
    """Create a tenant (sealed, seeded, announced on the tenant topic) and its first API key
    in one transaction: both or nothing. Raises `TenantExistsError` or `ValueError`."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            created = await create_tenant(
                conn,
                sealer=settings.sealer(),
                name=name,
                tenant_id=tenant_id,
                directory=settings.directory_sealer(),
            )
            key = await create_key(
                conn, tenant_id=created, name=FIRST_KEY_NAME, scopes=scopes, created_by_key=None
            )
        return created, key
    finally:
        await conn.close()


async def create_api_key(
    settings: TenantAdminSettings, *, tenant_id: uuid.UUID, name: str, scopes: Sequence[Scope]
) -> CreatedApiKey | None:
    """Create an API key for an existing tenant (e.g. when its admin keys are lost); None if
    there is no such tenant."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await set_tenant(conn, tenant_id)  # FORCEd row security binds the owner too
            if await repository.get(conn, tenant_id=tenant_id) is None:
                return None
            return await create_key(
                conn, tenant_id=tenant_id, name=name, scopes=scopes, created_by_key=None
            )
    finally:
        await conn.close()
