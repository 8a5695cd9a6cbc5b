"""The preferences service's part of rights requests: erasure (GDPR Art. 17, crypto-shredding)
and access (Art. 15, its part of the export).

On `consentry.rights.erasure_requested.v1` the subject's mutable rows go in one transaction
with the inbox claim: its preferences, this service's copy of its consent state, and its
subject row, which holds the sealed data key and the contact sealed under it; with the data
key gone, every copy of the contact ciphertext (backups, topics, logs) is unreadable. The
subject stays on the marketing suppression list (reason `erased`, by pseudonymous reference
only) so that no later import can add it again. Then `consentry.rights.erasure_completed.v1`
{service: preferences} reports what was erased. A repeated request erases nothing more and
reports again (the request's bookkeeping counts each service once).

On `consentry.rights.access_requested.v1` the service assembles what it holds about the
subject (preferences, the contact in clear, suppressions) as JSON, seals it to the request's
public key (`consentry.eventing.sealing.seal_part`) and publishes
`consentry.rights.access_part_ready.v1` {service: preferences}: the part is readable only by
the consent service when the requester downloads the export.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from consentry.eventing import catalogue, kafka, outbox, topics
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import Connection, create_pool, set_tenant
from consentry.eventing.envelope import Event, PoisonMessage, ReceivedEvent, utcnow
from consentry.eventing.sealing import Sealer, seal_part
from consentry.eventing.settings import DatabaseSettings, KafkaSettings
from consentry.preferences import contacts
from consentry.preferences.consentcopy.repository import consents_of
from consentry.preferences.lists import repository as lists_repository
from consentry.preferences.lists.service import suppress_erased
from consentry.preferences.settings import PreferencesKeySettings
from consentry.preferences.subjects import repository as subjects_repository
from consentry.preferences.subjects import service as subjects
from consentry.preferences.tenants import load_keys
from consentry.rights.v1 import rights_pb2

SERVICE = "preferences"
SOURCE = "/consentry/preferences"
GROUP_ID = "preferences-rights"

_DELETE_PREFERENCES = "DELETE FROM preferences WHERE tenant_id = $1 AND subject_ref = $2"
_DELETE_CONSENT_COPY = "DELETE FROM consent_copy WHERE tenant_id = $1 AND subject_ref = $2"
_DELETE_SUBJECT = """
DELETE FROM subjects WHERE tenant_id = $1 AND subject_ref = $2
RETURNING data_key_sealed IS NOT NULL AS had_key, contact_email_sealed IS NOT NULL AS had_contact
"""


class RightsSettings(DatabaseSettings, KafkaSettings, PreferencesKeySettings):
    """The rights worker: the preferences database, the broker, the master key (to open
    contacts for access exports)."""

    rights_group_id: str = GROUP_ID


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def erase_subject(conn: Connection, tenant_id: UUID, subject_ref: str) -> list[str]:
    """Delete the subject's rows and data key (tenant-scoped, in a transaction); return what
    was erased, for the completion certificate."""
    erased = []
    if _count(await conn.execute(_DELETE_PREFERENCES, tenant_id, subject_ref)):
        erased.append("preferences")
    if _count(await conn.execute(_DELETE_CONSENT_COPY, tenant_id, subject_ref)):
        erased.append("consent-copy")
    row = await conn.fetchrow(_DELETE_SUBJECT, tenant_id, subject_ref)
    if row is not None:
        erased.append("subject")
        if row["had_contact"]:
            erased.append("contact")
        if row["had_key"]:
            erased.append("data-key")
    await suppress_erased(conn, tenant_id, subject_ref)
    return erased


def completed_event(
    tenant_id: UUID, subject_ref: str, request_id: str, erased: list[str], at: datetime
) -> Event:
    """`erasure_completed` {service: preferences} for one subject of a request."""
    completed_at = Timestamp()
    completed_at.FromDatetime(at)
    message = rights_pb2.ErasureCompleted(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=request_id,
        service=SERVICE,
        completed_at=completed_at,
        erased=erased,
    )
    return Event(
        type=catalogue.ERASURE_COMPLETED,
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        message=message,
        source=SOURCE,
        time=at,
    )


async def access_part(
    conn: Connection, sealer: Sealer, tenant_id: UUID, subject_ref: str
) -> dict[str, Any]:
    """Everything this service holds about the subject (tenant-scoped connection)."""
    view = await subjects.view(conn, tenant_id=tenant_id, subject_ref=subject_ref)
    subject = await subjects_repository.get_subject(
        conn, tenant_id=tenant_id, subject_ref=subject_ref
    )
    email = None
    if subject is not None and subject["contact_email_sealed"] is not None:
        keys = await load_keys(conn, sealer, tenant_id)
        assert keys is not None  # the subject row references its tenant
        data_key = contacts.open_data_key(keys, subject_ref, subject["data_key_sealed"])
        email = contacts.open_contact(data_key, subject_ref, subject["contact_email_sealed"])
    suppressions = await lists_repository.suppressions_of(
        conn, tenant_id=tenant_id, refs=[subject_ref]
    )
    return {
        "service": SERVICE,
        "subject_ref": subject_ref,
        "known": subject is not None,
        "preferences": view.model_dump(mode="json"),
        "contact": None if email is None else {"email": email},
        "consents_as_known_here": await consents_of(
            conn, tenant_id=tenant_id, subject_ref=subject_ref
        ),
        "marketing_suppressions": [
            {
                "topic": topic or None,
                "channel": channel or None,
                "reason": reason,
                "suppressed_at": at.isoformat(),
            }
            for (topic, channel, reason), (at, _) in sorted(
                suppressions.get(subject_ref, {}).items()
            )
        ],
    }


def part_event(
    message: rights_pb2.AccessRequested, tenant_id: UUID, part: dict[str, Any], at: datetime
) -> Event:
    """`access_part_ready` {service: preferences}: the part sealed to the request's key."""
    ready_at = Timestamp()
    ready_at.FromDatetime(at)
    sealed = seal_part(
        message.export_public_key,
        json.dumps(part, sort_keys=True).encode(),
        tenant_id=tenant_id,
        request_id=UUID(message.request_id),
        service=SERVICE,
    )
    ready = rights_pb2.AccessPartReady(
        tenant_id=str(tenant_id),
        subject_ref=message.subject_ref,
        request_id=message.request_id,
        service=SERVICE,
        sealed_part=sealed,
        ready_at=ready_at,
    )
    return Event(
        type=catalogue.ACCESS_PART_READY,
        tenant_id=str(tenant_id),
        subject_ref=message.subject_ref,
        message=ready,
        source=SOURCE,
        time=at,
    )


class RightsHandler:
    """Erases on `erasure_requested`, answers `access_requested` with this service's part;
    other rights events are not this service's business."""

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer

    async def __call__(self, conn: Connection, event: ReceivedEvent) -> None:
        """Apply one rights event in the consumer's transaction."""
        message = event.message
        tenant_id = UUID(event.tenant_id)
        if isinstance(message, rights_pb2.ErasureRequested):
            await set_tenant(conn, tenant_id)
            erased = await erase_subject(conn, tenant_id, event.subject_ref)
            await outbox.add(
                conn,
                completed_event(tenant_id, event.subject_ref, message.request_id, erased, utcnow()),
            )
        elif isinstance(message, rights_pb2.AccessRequested):
            if len(message.export_public_key) != 32:
                raise PoisonMessage("schema-violation", "export_public_key is 32 bytes")
            await set_tenant(conn, tenant_id)
            part = await access_part(conn, self._sealer, tenant_id, event.subject_ref)
            await outbox.add(conn, part_event(message, tenant_id, part, utcnow()))


async def run_rights(settings: RightsSettings, stop: asyncio.Event) -> None:
    """Answer erasure and access requests until `stop` is set."""
    pool = await create_pool(settings)
    producer = kafka.producer(settings, "-rights-dlq")
    consumer = kafka.consumer(settings, settings.rights_group_id, topics.RIGHTS)
    await producer.start()
    await consumer.start()
    try:
        handler = RightsHandler(settings.sealer())
        await EventConsumer(settings.rights_group_id, consumer, producer, pool, handler).run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
