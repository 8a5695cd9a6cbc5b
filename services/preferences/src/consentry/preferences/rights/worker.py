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
public key and publishes `consentry.rights.access_part_ready.v1` {service: preferences}: the
part is readable only by the consent service when the requester downloads the export. Both
answers are built by the shared `consentry.eventing.rights`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from consentry.eventing import catalogue, kafka, outbox, rights, topics, tracing
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import Connection, create_pool, set_tenant
from consentry.eventing.envelope import Event, ReceivedEvent, utcnow
from consentry.eventing.sealing import Sealer
from consentry.eventing.settings import DatabaseSettings, KafkaSettings
from consentry.preferences import contacts
from consentry.preferences.consentcopy.repository import consents_of
from consentry.preferences.lists import repository as lists_repository
from consentry.preferences.lists.service import suppress_erased_all
from consentry.preferences.settings import PreferencesKeySettings
from consentry.preferences.subjects import repository as subjects_repository
from consentry.preferences.subjects import service as subjects
from consentry.preferences.tenants import load_keys
from consentry.rights.v1 import rights_pb2

SERVICE = "preferences"
SOURCE = "/consentry/preferences"
GROUP_ID = "preferences-rights"

# The subjects' rows of one tenant, returning whose rows went.
_DELETE_PREFERENCES_OF = """
DELETE FROM preferences WHERE tenant_id = $1 AND subject_ref = ANY($2::text[])
RETURNING subject_ref
"""
_DELETE_CONSENT_COPIES_OF = """
DELETE FROM consent_copy WHERE tenant_id = $1 AND subject_ref = ANY($2::text[])
RETURNING subject_ref
"""
_DELETE_SUBJECTS_OF = """
DELETE FROM subjects WHERE tenant_id = $1 AND subject_ref = ANY($2::text[])
RETURNING subject_ref, data_key_sealed IS NOT NULL AS had_key,
          contact_email_sealed IS NOT NULL AS had_contact
"""


class RightsSettings(DatabaseSettings, KafkaSettings, PreferencesKeySettings):
    """The rights worker: the preferences database, the broker, the master key (to open
    contacts for access exports)."""

    rights_group_id: str = GROUP_ID


async def erase_subject(conn: Connection, tenant_id: UUID, subject_ref: str) -> list[str]:
    """Delete the subject's rows and data key (tenant-scoped, in a transaction); return what
    was erased, for the completion certificate."""
    return (await erase_subjects(conn, tenant_id, [subject_ref]))[subject_ref]


async def erase_subjects(
    conn: Connection, tenant_id: UUID, subject_refs: Sequence[str]
) -> dict[str, list[str]]:
    """Delete many subjects' rows and data keys of one tenant in a few multi-row statements
    (tenant-scoped, in a transaction), keeping them suppressed; what was erased, per
    subject."""
    refs = sorted(set(subject_refs))
    erased: dict[str, list[str]] = {ref: [] for ref in refs}
    for row in await conn.fetch(_DELETE_PREFERENCES_OF, tenant_id, refs):
        if "preferences" not in erased[row["subject_ref"]]:
            erased[row["subject_ref"]].append("preferences")
    for row in await conn.fetch(_DELETE_CONSENT_COPIES_OF, tenant_id, refs):
        if "consent-copy" not in erased[row["subject_ref"]]:
            erased[row["subject_ref"]].append("consent-copy")
    for row in await conn.fetch(_DELETE_SUBJECTS_OF, tenant_id, refs):
        what = erased[row["subject_ref"]]
        what.append("subject")
        if row["had_contact"]:
            what.append("contact")
        if row["had_key"]:
            what.append("data-key")
    await suppress_erased_all(conn, tenant_id, refs)
    return erased


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


# The rights events this service acts on; the rest (the services' answers) are not its
# business, and the consumer passes over them unread.
ACTED_ON = (catalogue.ERASURE_REQUESTED, catalogue.ACCESS_REQUESTED)
_ACTED_ON = tuple(event_type.message for event_type in ACTED_ON)


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
            await outbox.add(conn, _completed(event, erased))
        elif isinstance(message, rights_pb2.AccessRequested):
            await set_tenant(conn, tenant_id)
            part = await access_part(conn, self._sealer, tenant_id, event.subject_ref)
            ready = rights.access_part_ready(
                message, service=SERVICE, source=SOURCE, tenant_id=tenant_id, part=part, at=utcnow()
            )
            await outbox.add(conn, ready)

    async def batch(self, conn: Connection, events: Sequence[ReceivedEvent]) -> None:
        """Apply a batch of rights events in the consumer's transaction, as one call per event
        would: each run of erasures of one tenant in a few multi-row statements (the
        preferences service's share of a bulk erasure arrives as a stream of them), anything
        else one by one, in order. A subject named twice in a run is erased by the first
        event; the later one reports that nothing was left, as it would one at a time.

        Events with no effect here (the consumer's `accepts` passes over the types it does
        not act on; deadlines and closings share the requests' topic) are dropped first, so
        that they do not cut a run into runs of one."""
        events = [event for event in events if isinstance(event.message, _ACTED_ON)]
        at = 0
        while at < len(events):
            event = events[at]
            if not isinstance(event.message, rights_pb2.ErasureRequested):
                await self(conn, event)
                at += 1
                continue
            end = at
            while (
                end < len(events)
                and events[end].tenant_id == event.tenant_id
                and isinstance(events[end].message, rights_pb2.ErasureRequested)
            ):
                end += 1
            await self._erase_run(conn, events[at:end])
            at = end

    async def _erase_run(self, conn: Connection, run: Sequence[ReceivedEvent]) -> None:
        tenant_id = UUID(run[0].tenant_id)
        await set_tenant(conn, tenant_id)
        erased = await erase_subjects(conn, tenant_id, [event.subject_ref for event in run])
        completed = []
        for event in run:
            # The first event of a subject erased it; a repeat finds nothing left. Each answer
            # continues the trace of the request it answers.
            with tracing.continuing(event):
                completed.append(_completed(event, erased.pop(event.subject_ref, [])))
        await outbox.add_many(conn, completed)


def _completed(event: ReceivedEvent, erased: list[str]) -> Event:
    return rights.answer_erasure(event, service=SERVICE, source=SOURCE, erased=erased)


async def run_rights(settings: RightsSettings, stop: asyncio.Event) -> None:
    """Answer erasure and access requests until `stop` is set."""
    pool = await create_pool(settings)
    producer = kafka.producer(settings, "-rights-dlq")
    consumer = kafka.consumer(settings, settings.rights_group_id, topics.RIGHTS)
    await producer.start()
    await consumer.start()
    try:
        handler = RightsHandler(settings.sealer())
        await EventConsumer(
            settings.rights_group_id,
            consumer,
            producer,
            pool,
            handler,
            batch_handler=handler.batch,
            accepts=ACTED_ON,
        ).run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
