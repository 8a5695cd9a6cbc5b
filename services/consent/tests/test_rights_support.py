"""Helpers shared by the rights-request tests (no tests here): events other services
publish, built and decoded exactly as a consumer receives them, and the documented
certificate verifier."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from consentry.consent.rights import repository
from consentry.consent.rights.deadlines import Deadline
from consentry.consent.rights.tracker import RightsTracker
from consentry.eventing import catalogue
from consentry.eventing.db import Pool
from consentry.eventing.envelope import Event, ReceivedEvent, decode, encode
from consentry.rights.v1 import rights_pb2
from consentry.subprocessors.v1 import subprocessors_pb2

DOCS = Path(__file__).resolve().parents[3] / "docs" / "rights-requests.md"
ERASURE = subprocessors_pb2.NOTICE_KIND_ERASURE
M = TypeVar("M", bound=Message)


def messages(events: Sequence[ReceivedEvent], cls: type[M]) -> list[M]:
    """The protobuf messages of `events`, which must all be `cls`."""
    found = [event.message for event in events]
    assert all(isinstance(message, cls) for message in found), found
    return [message for message in found if isinstance(message, cls)]


def stamp(moment: datetime | None = None) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment or datetime.now(UTC))
    return value


def received(event: Event) -> ReceivedEvent:
    """`event` as a consumer gets it: encoded to a Kafka record, then decoded and checked."""
    record = encode(event)
    return decode(record.key, record.value, list(record.headers))


def service_completed(
    tenant_id: uuid.UUID,
    subject_ref: str,
    request_id: str,
    service: str = "preferences",
    erased: Sequence[str] = ("preferences", "data-key"),
) -> Event:
    """Another internal service's `ErasureCompleted`."""
    message = rights_pb2.ErasureCompleted(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=request_id,
        service=service,
        completed_at=stamp(),
        erased=list(erased),
    )
    return Event(
        catalogue.ERASURE_COMPLETED, str(tenant_id), subject_ref, message, f"/consentry/{service}"
    )


def selected(
    tenant_id: uuid.UUID, subject_ref: str, request_id: str, recipients: Sequence[str]
) -> Event:
    """The subprocessor notifier's `RecipientsSelected`."""
    message = subprocessors_pb2.RecipientsSelected(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=request_id,
        kind=ERASURE,
        recipient_ids=list(recipients),
        selected_at=stamp(),
    )
    return Event(
        catalogue.RECIPIENTS_SELECTED,
        str(tenant_id),
        subject_ref,
        message,
        "/consentry/subprocessors",
    )


def acknowledged(
    tenant_id: uuid.UUID, subject_ref: str, request_id: str, recipient: str, attempts: int = 1
) -> Event:
    """A recipient's `DeliveryAcknowledged`."""
    message = subprocessors_pb2.DeliveryAcknowledged(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=request_id,
        kind=ERASURE,
        recipient_id=recipient,
        webhook_id=f"msg_{uuid.uuid4().hex}",
        first_sent_at=stamp(),
        acknowledged_at=stamp(),
        attempts=attempts,
    )
    return Event(
        catalogue.DELIVERY_ACKNOWLEDGED,
        str(tenant_id),
        subject_ref,
        message,
        "/consentry/subprocessors",
    )


def dead_lettered(tenant_id: uuid.UUID, subject_ref: str, request_id: str, recipient: str) -> Event:
    """A notice the notifier gave up on (`DeliveryDeadLettered`)."""
    message = subprocessors_pb2.DeliveryDeadLettered(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=request_id,
        kind=ERASURE,
        recipient_id=recipient,
        webhook_id=f"msg_{uuid.uuid4().hex}",
        first_sent_at=stamp(),
        dead_lettered_at=stamp(),
        attempts=17,
        last_error="HTTP 503",
    )
    return Event(
        catalogue.DELIVERY_DEAD_LETTERED,
        str(tenant_id),
        subject_ref,
        message,
        "/consentry/subprocessors",
    )


async def apply(
    pool: Pool, tracker: RightsTracker, events: Sequence[Event | ReceivedEvent]
) -> None:
    """Run the tracker's batch handler on `events` in one transaction, as the consumer does."""
    decoded = [e if isinstance(e, ReceivedEvent) else received(e) for e in events]
    async with pool.acquire() as conn, conn.transaction():
        await tracker.apply(conn, decoded)


async def request_row(db: asyncpg.Connection, request_id: str) -> asyncpg.Record:
    """The request as the service reads it (`repository.get_request`: its row with the
    tracker's counters), whichever tenant it belongs to."""
    rid = uuid.UUID(request_id)
    tenant_id = await db.fetchval("SELECT tenant_id FROM rights_requests WHERE id = $1", rid)
    assert tenant_id is not None
    row = await repository.get_request(db, tenant_id=tenant_id, request_id=rid)
    assert row is not None
    return row


async def jwks_of(client: httpx.AsyncClient, tenant_id: uuid.UUID) -> dict[str, Any]:
    response = await client.get(f"/v1/tenants/{tenant_id}/jwks.json", headers={})
    assert response.status_code == 200, response.text
    jwks: dict[str, Any] = response.json()
    return jwks


def _verifier() -> Callable[[str, dict[str, Any], str], dict[str, Any]]:
    """`verify_certificate` from the runnable example in docs/rights-requests.md."""
    text = DOCS.read_text()
    marker = text.index("<!-- verify-certificate -->")
    block = re.search(r"```python\n(.*?)```", text[marker:], re.DOTALL)
    assert block is not None, "docs/rights-requests.md lost its verification example"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), str(DOCS), "exec"), namespace)
    verify: Callable[[str, dict[str, Any], str], dict[str, Any]] = namespace["verify_certificate"]
    return verify


verify_certificate = _verifier()


async def file(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """File a rights request over HTTP; it must be accepted (202)."""
    response = await client.post("/v1/rights-requests", json=body)
    assert response.status_code == 202, response.text
    filed: dict[str, Any] = response.json()
    return filed


async def backdate(
    db: asyncpg.Connection, request_id: str, received: datetime, *, paused: bool = False
) -> None:
    """Move a request's receipt back in time (and its derived due instant with it)."""
    deadline = Deadline.start(received, "Europe/Stockholm", "SE")
    pauses = f'[{{"paused_at": "{received.isoformat()}", "resumed_at": null}}]' if paused else "[]"
    await db.execute(
        "UPDATE rights_requests SET received_at = $2::timestamptz, due_at = $3, "
        "pauses = $4::jsonb, verified_at = CASE WHEN verified_at IS NULL THEN NULL ELSE $2 END, "
        "started_at = CASE WHEN started_at IS NULL THEN NULL ELSE $2 END WHERE id = $1",
        uuid.UUID(request_id),
        received,
        deadline.due_at,
        pauses,
    )
