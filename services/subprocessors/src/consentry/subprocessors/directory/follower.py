"""The directory follower: this service's replica of the tenant directory (ADR 0008).

The shared follower (`consentry.eventing.replica`) folds API keys and revocations into
`api_keys`, so the subprocessors API accepts the keys the consent service issues. Its
`TenantProvisioned` hook here records that the tenant exists (`tenants`: id, name,
provisioning time; a repeat updates the name). The wrapped subject key is not opened: this
service derives no subject references, so it holds no directory key.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from uuid import UUID

from consentry.eventing import replica
from consentry.eventing.db import Connection
from consentry.subprocessors.directory import repository
from consentry.subprocessors.settings import DirectorySettings
from consentry.tenant.v1 import tenant_pb2


async def record_provisioned(
    conn: Connection,
    tenant_id: UUID,
    message: tenant_pb2.TenantProvisioned,
    provisioned_at: datetime,
) -> None:
    """The `TenantProvisioned` hook: the tenant exists here from now on."""
    await repository.record_tenant(
        conn, tenant_id=tenant_id, name=message.name, provisioned_at=provisioned_at
    )


async def run_directory(settings: DirectorySettings, stop: asyncio.Event) -> None:
    """Follow the tenant topic until `stop` is set (dead letters:
    `consentry.dlq.<directory_group_id>`, by default `consentry.dlq.subprocessors-directory`)."""
    await replica.run_directory(settings, stop, record_provisioned)
