"""The notifier's effects for rights requests (docs/rights-requests.md), each in the
transaction of the event's inbox claim:

- `ErasureRequested`: the recipients' notices (`deliveries.service.erasure_notices`) and
  this service's `ErasureCompleted{service: subprocessors}` (`erasure_completed`) with
  `erased` empty. It erases
  nothing: what it holds about a subject is the record of who was told what and who
  confirmed, by pseudonymous reference only (notices, deliveries), which is what it must
  show for the erasure itself (Art. 19, Art. 5(2)).
- `AccessRequested`: its part of the subject's export (`access_part`), sealed to the
  request's key, as `AccessPartReady{service: subprocessors}`: the recipients to whom the
  subject's data were disclosed (Art. 15(1)(c)).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from consentry.eventing import outbox, rights, tracing
from consentry.eventing.db import Connection
from consentry.eventing.envelope import Event, ReceivedEvent, utcnow
from consentry.rights.v1 import rights_pb2
from consentry.subprocessors.deliveries.events import SOURCE
from consentry.subprocessors.deliveries.models import Claimed
from consentry.subprocessors.deliveries.service import NoticeOptions
from consentry.subprocessors.recipients.models import EEA_COUNTRIES
from consentry.subprocessors.rights import repository

# The `service` of this service's answers (the consent service's CONSENTRY_ERASURE_SERVICES).
SERVICE = "subprocessors"


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _recipient(row: asyncpg.Record) -> dict[str, Any]:
    """Who the recipient is and what it receives, as registered now (no URL, no secret)."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "role": row["role"],
        "region": row["region"],
        "outside_eea": row["region"] not in EEA_COUNTRIES,
        "purposes": list(row["purposes"]),
        "data_categories": list(row["data_categories"]),
    }


async def access_part(conn: Connection, *, tenant_id: UUID, subject_ref: str) -> dict[str, Any]:
    """This service's part of the subject's export: every notice about the subject with
    each recipient told (when sent, status, when acknowledged), and the tenant's current
    recipients (tenant-scoped connection)."""
    notices, deliveries = await repository.subject_notices(
        conn, tenant_id=tenant_id, subject_ref=subject_ref
    )
    told: dict[UUID, list[dict[str, Any]]] = {}
    for row in deliveries:
        told.setdefault(row["notice_id"], []).append(
            {
                "recipient": _recipient(row),
                "status": row["status"],
                "attempts": row["attempts"],
                "first_sent_at": _time(row["first_attempt_at"]),
                "delivered_at": _time(row["delivered_at"]),
                "acknowledged_at": _time(row["acknowledged_at"]),
                "dead_lettered_at": _time(row["dead_lettered_at"]),
            }
        )
    return {
        "service": SERVICE,
        "subject_ref": subject_ref,
        "notices": [
            {
                "kind": notice["kind"],
                "request_id": notice["request_id"] or None,
                "request_kind": notice["request_kind"],
                "purposes": list(notice["purposes"]),
                "occurred_at": _time(notice["occurred_at"]),
                "selected_at": _time(notice["selected_at"]),
                "recipients": told.get(notice["id"], []),
            }
            for notice in notices
        ],
        "recipients": [
            {**_recipient(row), "registered_at": _time(row["created_at"])}
            for row in await repository.active_recipients(conn, tenant_id=tenant_id)
        ],
    }


def erasure_completed(event: ReceivedEvent) -> Event:
    """This service's answer to an ErasureRequested: nothing erased (see the module doc),
    continuing the request's trace."""
    with tracing.continuing(event):
        return rights.answer_erasure(event, service=SERVICE, source=SOURCE, erased=[])


async def answer_access(
    conn: Connection, options: NoticeOptions, event: ReceivedEvent
) -> list[Claimed]:
    """AccessRequested: this service's part of the subject's export, sealed to the
    request's key; no delivery."""
    message = event.message
    assert isinstance(message, rights_pb2.AccessRequested)
    tenant_id = UUID(event.tenant_id)
    part = await access_part(conn, tenant_id=tenant_id, subject_ref=event.subject_ref)
    ready = rights.access_part_ready(
        message, service=SERVICE, source=SOURCE, tenant_id=tenant_id, part=part, at=utcnow()
    )
    await outbox.add(conn, ready)
    return []
