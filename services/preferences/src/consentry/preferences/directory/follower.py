"""The directory follower: this service's replica of the tenant directory (ADR 0008).

The consent service announces tenants and API keys on `consentry.tenant.v1`; the shared
follower (`consentry.eventing.replica`: API keys, revocations, tombstones,
`api-key-tenant-mismatch`, the consumer loop) folds them into `api_keys`, and this module's
hook folds `TenantProvisioned` into `tenants`, so the preferences API accepts the same keys
and derives the same subject references without reading the consent database:

- the subject key is unwrapped with the directory key (a key that does not open is
  dead-lettered, `subject-key-unwrap-failed`) and stored sealed under this service's master
  key, with a fresh key-encryption key and link key of this service's own;
- a repeat keeps those two (they seal data and sign links already handed out: never rotated
  implicitly) and updates the name; a repeat whose subject key differs from the stored one is
  dead-lettered (`subject-key-conflict`): adopting it would orphan every subject reference
  this service holds, so an operator must decide.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from datetime import datetime
from uuid import UUID

from consentry.eventing import replica
from consentry.eventing.db import Connection
from consentry.eventing.directory import subject_key_context
from consentry.eventing.envelope import PoisonMessage
from consentry.eventing.sealing import KEY_BYTES, Sealer
from consentry.preferences.directory import repository
from consentry.preferences.settings import DirectorySettings
from consentry.preferences.tenants import kek_context, link_key_context
from consentry.tenant.v1 import tenant_pb2


class ProvisionTenant:
    """The `TenantProvisioned` hook: the tenant's row with its subject key and this service's
    own secrets, sealed under the master key."""

    def __init__(self, *, master: Sealer, directory: Sealer) -> None:
        self._master = master
        self._directory = directory

    async def __call__(
        self,
        conn: Connection,
        tenant_id: UUID,
        message: tenant_pb2.TenantProvisioned,
        provisioned_at: datetime,
    ) -> None:
        """Add the tenant, or rename it; PoisonMessage for a key that does not open or
        differs from the stored one."""
        subject_key = replica.unwrap_subject_key(self._directory, tenant_id, message)
        context = subject_key_context(tenant_id)
        inserted = await repository.insert_tenant(
            conn,
            tenant_id=tenant_id,
            name=message.name,
            subject_key_sealed=self._master.seal(subject_key, context=context),
            kek_sealed=self._master.seal(
                secrets.token_bytes(KEY_BYTES), context=kek_context(tenant_id)
            ),
            link_key_sealed=self._master.seal(
                secrets.token_bytes(KEY_BYTES), context=link_key_context(tenant_id)
            ),
            provisioned_at=provisioned_at,
        )
        if inserted:
            return
        stored = await repository.subject_key_sealed(conn, tenant_id=tenant_id)
        assert stored is not None  # the insert conflicted with it; rows are never deleted
        if not hmac.compare_digest(self._master.open(stored, context=context), subject_key):
            raise PoisonMessage(
                "subject-key-conflict", "the announced subject key differs from the stored one"
            )
        await repository.rename_tenant(conn, tenant_id=tenant_id, name=message.name)


async def run_directory(settings: DirectorySettings, stop: asyncio.Event) -> None:
    """Follow the tenant topic until `stop` is set (dead letters:
    `consentry.dlq.<directory_group_id>`, by default `consentry.dlq.preferences-directory`)."""
    hook = ProvisionTenant(master=settings.sealer(), directory=settings.directory_sealer())
    await replica.run_directory(settings, stop, hook)
