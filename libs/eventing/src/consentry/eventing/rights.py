"""A service's answers to rights requests on `consentry.rights.answers.v1`
(docs/rights-requests.md): `ErasureCompleted{service}` (what it erased for one subject of an
erasure request) and `AccessPartReady{service}` (its part of one subject's access export,
sealed to the request's X25519 key with `consentry.eventing.sealing.seal_part`). Each is
queued through the outbox in the transaction of the service's own work; the consent
service's rights tracker waits for one answer per expected service and subject.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from consentry.eventing import catalogue
from consentry.eventing.envelope import (
    Event,
    PoisonMessage,
    ReceivedEvent,
    to_timestamp,
    utcnow,
)
from consentry.eventing.sealing import seal_part
from consentry.rights.v1 import rights_pb2


def erasure_completed(
    *,
    service: str,
    source: str,
    tenant_id: UUID,
    subject_ref: str,
    request_id: str,
    erased: Sequence[str],
    at: datetime,
) -> Event:
    """`consentry.rights.erasure_completed.v1` {service}: `erased` names what the service
    erased for the subject (empty: nothing), for the completion certificate."""
    message = rights_pb2.ErasureCompleted(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=request_id,
        service=service,
        completed_at=to_timestamp(at),
        erased=list(erased),
    )
    return Event(
        type=catalogue.ERASURE_COMPLETED,
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        message=message,
        source=source,
        time=at,
    )


def answer_erasure(
    event: ReceivedEvent, *, service: str, source: str, erased: Sequence[str]
) -> Event:
    """`erasure_completed` answering a received ErasureRequested (its tenant, subject and
    request), completed now."""
    message = event.message
    assert isinstance(message, rights_pb2.ErasureRequested)
    return erasure_completed(
        service=service,
        source=source,
        tenant_id=UUID(event.tenant_id),
        subject_ref=event.subject_ref,
        request_id=message.request_id,
        erased=erased,
        at=utcnow(),
    )


def access_part_ready(
    request: rights_pb2.AccessRequested,
    *,
    service: str,
    source: str,
    tenant_id: UUID,
    part: Mapping[str, Any],
    at: datetime,
) -> Event:
    """`consentry.rights.access_part_ready.v1` {service}: `part` (JSON) sealed to the
    request's export key. PoisonMessage (`schema-violation`) when the request carries no
    32-byte key or its id is not a UUID: no part could ever be opened for it."""
    if len(request.export_public_key) != 32:
        raise PoisonMessage("schema-violation", "export_public_key is 32 bytes")
    try:
        request_id = UUID(request.request_id)
    except ValueError:
        raise PoisonMessage("schema-violation", "request_id is not a UUID") from None
    sealed = seal_part(
        request.export_public_key,
        json.dumps(part, sort_keys=True).encode(),
        tenant_id=tenant_id,
        request_id=request_id,
        service=service,
    )
    ready = rights_pb2.AccessPartReady(
        tenant_id=str(tenant_id),
        subject_ref=request.subject_ref,
        request_id=request.request_id,
        service=service,
        sealed_part=sealed,
        ready_at=to_timestamp(at),
    )
    return Event(
        type=catalogue.ACCESS_PART_READY,
        tenant_id=str(tenant_id),
        subject_ref=request.subject_ref,
        message=ready,
        source=source,
        time=at,
    )
