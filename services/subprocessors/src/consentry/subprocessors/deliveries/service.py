"""Delivery rules: which recipients a notice goes to, what an attempt's outcome does to a
delivery, acknowledgements (recorded once, published once), and the Art. 19 report."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from consentry.consent.v1 import consent_pb2
from consentry.eventing import outbox, tracing
from consentry.eventing.db import Connection, Pool, tenant_transaction
from consentry.eventing.envelope import Event, ReceivedEvent, field_time, utcnow
from consentry.eventing.sealing import Sealer
from consentry.httpapi.problems import Problem
from consentry.rights.v1 import rights_pb2
from consentry.subprocessors import signing
from consentry.subprocessors.deliveries import events, repository
from consentry.subprocessors.deliveries.models import (
    Acknowledgement,
    AcknowledgementIn,
    Claimed,
    Delivery,
    DeliveryList,
    RecipientProgress,
    RequestRecipients,
    Status,
    notice_body,
)
from consentry.subprocessors.recipients import repository as recipients
from consentry.subprocessors.recipients.service import signing_secrets

# uuid5 namespace of notice and delivery ids: derived from the triggering event's id, so a
# redelivered event makes no second notice or delivery (and no second webhook-id).
ID_NAMESPACE = uuid.UUID("5d7c3f8e-2b1a-4c6e-9f0d-7a8b9c0d1e2f")
REQUEST_KINDS = {
    rights_pb2.REQUEST_KIND_ERASURE: "erasure",
    rights_pb2.REQUEST_KIND_CHILD_DATA_ERASURE: "child-data-erasure",
}


def notice_id(tenant_id: UUID, event_id: str) -> UUID:
    """The notice made from one event."""
    return uuid.uuid5(ID_NAMESPACE, f"{tenant_id}/{event_id}")


def delivery_id(notice: UUID, recipient_id: UUID) -> UUID:
    """The delivery of one notice to one recipient."""
    return uuid.uuid5(ID_NAMESPACE, f"{notice}/{recipient_id}")


@dataclass(frozen=True)
class NoticeOptions:
    """What the notifier puts into new deliveries; with `lease_seconds` they are claimed
    for this process's sender at once (handed over in memory after the commit)."""

    ack_url: str
    window_seconds: float
    lease_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class NoticeSpec:
    """A notice to make from one event: what it is about and whom it goes to."""

    event: ReceivedEvent
    kind: str
    request_id: str
    request_kind: str | None
    purposes: list[str]
    occurred_at: datetime
    recipient_ids: list[UUID]
    # RecipientsSelected even when nobody is told (an erasure request waits for it).
    publish_when_empty: bool


async def make_notices(
    conn: Connection, options: NoticeOptions, tenant_id: UUID, specs: Sequence[NoticeSpec]
) -> list[Claimed]:
    """Record the notices of one tenant and one delivery per recipient, and publish
    RecipientsSelected, in the caller's transaction (a few statements for the whole
    sequence); the deliveries made. A notice made before (the inbox normally stops a
    redelivery earlier) makes nothing again."""
    if not specs:
        return []
    notices = [notice_id(tenant_id, spec.event.id) for spec in specs]
    selected = await repository.insert_notices(
        conn,
        tenant_id=tenant_id,
        notices=[
            repository.NoticeRow(
                id=notice,
                source_event_id=spec.event.id,
                kind=spec.kind,
                request_id=spec.request_id,
                request_kind=spec.request_kind,
                subject_ref=spec.event.subject_ref,
                purposes=spec.purposes,
                occurred_at=spec.occurred_at,
                recipient_ids=spec.recipient_ids,
            )
            for notice, spec in zip(notices, specs, strict=True)
        ],
    )
    deliveries: list[repository.DeliveryRow] = []
    published: list[Event] = []
    for notice, spec in zip(notices, specs, strict=True):
        selected_at = selected.get(notice)
        if selected_at is None:
            continue
        for recipient in spec.recipient_ids:
            delivery = delivery_id(notice, recipient)
            body = notice_body(
                kind=spec.kind,
                delivery_id=delivery,
                recipient_id=recipient,
                tenant_id=tenant_id,
                subject_ref=spec.event.subject_ref,
                request_id=spec.request_id,
                request_kind=spec.request_kind,
                purposes=spec.purposes,
                occurred_at=spec.occurred_at,
                ack_url=options.ack_url,
            )
            deliveries.append(repository.DeliveryRow(notice, delivery, recipient, body))
        if spec.recipient_ids or spec.publish_when_empty:
            with tracing.continuing(spec.event):
                published.append(
                    events.recipients_selected(
                        tenant_id=tenant_id,
                        subject_ref=spec.event.subject_ref,
                        request_id=spec.request_id,
                        kind=spec.kind,
                        recipient_ids=spec.recipient_ids,
                        selected_at=selected_at,
                    )
                )
    made = await repository.insert_deliveries(
        conn,
        tenant_id=tenant_id,
        deliveries=deliveries,
        window_seconds=options.window_seconds,
        lease_seconds=options.lease_seconds,
    )
    await outbox.add_many(conn, published)
    return [Claimed.of(tenant_id, row) for row in made]


async def erasure_notices(
    conn: Connection, tenant_id: UUID, events_: Sequence[ReceivedEvent]
) -> list[NoticeSpec]:
    """ErasureRequested (of one tenant): every active recipient of the tenant may hold the
    subject's data, so every one is told. RecipientsSelected is published even when there
    is none (the rights request waits for it)."""
    if not events_:
        return []
    everyone = await recipients.for_erasure(conn, tenant_id=tenant_id)
    specs = []
    for event in events_:
        message = event.message
        assert isinstance(message, rights_pb2.ErasureRequested)
        specs.append(
            NoticeSpec(
                event=event,
                kind="erasure",
                request_id=message.request_id,
                request_kind=REQUEST_KINDS.get(message.kind, "erasure"),
                purposes=[],
                occurred_at=field_time(message, "requested_at", event.time),
                recipient_ids=everyone,
                publish_when_empty=True,
            )
        )
    return specs


async def withdrawal_notices(
    conn: Connection, tenant_id: UUID, events_: Sequence[ReceivedEvent]
) -> list[NoticeSpec]:
    """ConsentWithdrawn of purpose P (of one tenant): the active recipients that receive
    data for P are told. Nothing is recorded or published when no recipient has P (most
    withdrawals)."""
    by_purpose: dict[str, list[UUID]] = {}
    specs = []
    for event in events_:
        message = event.message
        assert isinstance(message, consent_pb2.ConsentWithdrawn)
        decision = message.decision
        if decision.purpose not in by_purpose:
            by_purpose[decision.purpose] = await recipients.for_purpose(
                conn, tenant_id=tenant_id, purpose=decision.purpose
            )
        selected = by_purpose[decision.purpose]
        if not selected:
            continue
        specs.append(
            NoticeSpec(
                event=event,
                kind="consent-withdrawn",
                request_id="",
                request_kind=None,
                purposes=[decision.purpose],
                occurred_at=field_time(decision, "occurred_at", event.time),
                recipient_ids=selected,
                publish_when_empty=False,
            )
        )
    return specs


# --- Outcomes of attempts (the sender) ---------------------------------------------------


def _acknowledged_event(tenant_id: UUID, row: asyncpg.Record) -> Event:
    return events.delivery_acknowledged(
        tenant_id=tenant_id,
        subject_ref=row["subject_ref"],
        request_id=row["request_id"],
        kind=row["kind"],
        recipient_id=row["recipient_id"],
        delivery_id=row["id"],
        first_sent_at=row["first_attempt_at"],
        acknowledged_at=row["acknowledged_at"],
        attempts=row["attempts"],
    )


async def record_acknowledged(
    conn: Connection, *, tenant_id: UUID, deliveries: Sequence[UUID], via: str
) -> list[asyncpg.Record]:
    """Record acknowledgements and publish DeliveryAcknowledged, each once per delivery, in
    the caller's transaction; the rows acknowledged now (a repeat is left out)."""
    rows = await repository.acknowledge(conn, tenant_id=tenant_id, delivery_ids=deliveries, via=via)
    await outbox.add_many(conn, [_acknowledged_event(tenant_id, row) for row in rows])
    return rows


async def record_dead_letters(
    conn: Connection, *, tenant_id: UUID, failures: Sequence[tuple[UUID, str]]
) -> list[asyncpg.Record]:
    """Dead-letter and flag open deliveries (delivery, last error) and publish
    DeliveryDeadLettered for each; those closed meanwhile (e.g. acknowledged by a callback)
    are left alone. The rows dead-lettered now."""
    rows = await repository.dead_letter(conn, tenant_id=tenant_id, failures=failures)
    await outbox.add_many(
        conn,
        [
            events.delivery_dead_lettered(
                tenant_id=tenant_id,
                subject_ref=row["subject_ref"],
                request_id=row["request_id"],
                kind=row["kind"],
                recipient_id=row["recipient_id"],
                delivery_id=row["id"],
                first_sent_at=row["first_attempt_at"],
                dead_lettered_at=row["dead_lettered_at"],
                attempts=row["attempts"],
                last_error=row["last_error"],
            )
            for row in rows
        ],
    )
    return rows


# --- The acknowledgement callback -------------------------------------------------------


def _validation_problem(error: ValidationError) -> Problem:
    errors = [
        {"location": ["body", *(str(part) for part in item["loc"])], "message": item["msg"]}
        for item in error.errors()
    ]
    return Problem(
        422,
        "validation-error",
        "The request is not valid",
        "; ".join(f"{'.'.join(e['location'])}: {e['message']}" for e in errors)[:1000],
        errors=errors,
    )


def _unknown_delivery() -> Problem:
    return Problem(
        404,
        "delivery-not-found",
        "No such delivery",
        detail="no notice with this delivery id or webhook id was sent to this recipient",
    )


async def acknowledge(
    pool: Pool,
    sealer: Sealer,
    *,
    body: bytes,
    headers: Mapping[str, str],
    tolerance_seconds: float,
) -> Acknowledgement:
    """Record a recipient's signed acknowledgement (POST /v1/acknowledgements).

    The signature, made with the recipient's secret over the exact body, is the only
    authentication: 401 `invalid-signature` or `stale-timestamp` refuse it, 404 when the
    delivery is unknown or was not sent to that recipient. A repeated acknowledgement
    changes nothing and answers 200 again."""
    try:
        ack = AcknowledgementIn.model_validate_json(body)
    except ValidationError as error:
        raise _validation_problem(error) from None
    delivery = ack.delivery_id or signing.delivery_id_of(ack.webhook_id or "")
    if delivery is None:
        raise _unknown_delivery()
    async with pool.acquire() as conn:
        found = await repository.find_delivery(conn, delivery)
    if found is None or found["recipient_id"] != ack.recipient_id:
        raise _unknown_delivery()
    tenant_id: UUID = found["tenant_id"]
    async with tenant_transaction(pool, tenant_id) as conn:
        secrets_ = await signing_secrets(
            conn, sealer, tenant_id=tenant_id, recipient_id=ack.recipient_id, now=utcnow()
        )
        try:
            signing.verify(secrets_, body, headers, tolerance_seconds=tolerance_seconds)
        except signing.SignatureError as error:
            title = (
                "The acknowledgement's timestamp is outside the tolerance"
                if error.reason == "stale-timestamp"
                else "The acknowledgement's signature is not valid"
            )
            raise Problem(401, error.reason, title, detail=error.detail) from None
        rows = await record_acknowledged(
            conn, tenant_id=tenant_id, deliveries=[delivery], via="callback"
        )
        if rows:
            acknowledged_at: datetime = rows[0]["acknowledged_at"]
        else:
            earlier = await repository.acknowledged_at(
                conn, tenant_id=tenant_id, delivery_id=delivery
            )
            assert earlier is not None
            acknowledged_at = earlier
    return Acknowledgement(
        delivery_id=delivery,
        webhook_id=signing.webhook_id(delivery),
        recipient_id=ack.recipient_id,
        status=Status.ACKNOWLEDGED,
        acknowledged_at=acknowledged_at,
        already_acknowledged=not rows,
    )


# --- Reports ---------------------------------------------------------------------------


def _progress_status(row: asyncpg.Record) -> Status:
    if row["pending"]:
        return Status.PENDING
    if row["delivered"]:
        return Status.DELIVERED
    if row["dead_lettered"]:
        return Status.DEAD_LETTERED
    return Status.ACKNOWLEDGED


async def request_recipients(
    pool: Pool, *, tenant_id: UUID, request_id: str, subject_ref: str | None
) -> RequestRecipients:
    """Who was told about the request (per recipient), when, and who confirmed; 404 when
    the notifier has seen no subject of the request (yet)."""
    async with tenant_transaction(pool, tenant_id) as conn:
        notices, rows = await repository.request_recipients(
            conn, tenant_id=tenant_id, request_id=request_id, subject_ref=subject_ref
        )
    if not notices["subjects"]:
        raise Problem(
            404,
            "request-not-found",
            "No notice was made for this request",
            detail="unknown request, or the notifier has not received it yet",
            request_id=request_id,
        )
    progress = [
        RecipientProgress(
            recipient_id=row["recipient_id"],
            name=row["name"],
            role=row["role"],
            region=row["region"],
            deliveries=row["deliveries"],
            status=_progress_status(row),
            first_notified_at=row["first_notified_at"],
            attempts=row["attempts"],
            delivered_at=row["delivered_at"],
            acknowledged_at=row["acknowledged_at"],
            flagged_at=row["flagged_at"],
            pending=row["pending"],
            delivered=row["delivered"],
            acknowledged=row["acknowledged"],
            dead_lettered=row["dead_lettered"],
        )
        for row in rows
    ]
    return RequestRecipients(
        request_id=request_id,
        subjects=notices["subjects"],
        first_selected_at=notices["first_selected_at"],
        complete=all(p.status in (Status.ACKNOWLEDGED, Status.DEAD_LETTERED) for p in progress),
        recipients=progress,
    )


async def list_deliveries(
    pool: Pool,
    *,
    tenant_id: UUID,
    status: Status | None,
    request_id: str | None,
    recipient_id: UUID | None,
    after: UUID | None,
    limit: int,
) -> DeliveryList:
    """A page of the tenant's deliveries (e.g. the dead-lettered ones: the escalation list)."""
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await repository.list_deliveries(
            conn,
            tenant_id=tenant_id,
            status=None if status is None else status.value,
            request_id=request_id,
            recipient_id=recipient_id,
            after=after,
            limit=limit + 1,
        )
    page = [Delivery.model_validate(dict(row)) for row in rows[:limit]]
    return DeliveryList(
        deliveries=page, next_after=page[-1].id if len(rows) > limit and page else None
    )


async def get_delivery(pool: Pool, *, tenant_id: UUID, delivery: UUID) -> Delivery:
    """One delivery; 404 when the tenant has none with this id."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repository.get_delivery(conn, tenant_id=tenant_id, delivery_id=delivery)
    if row is None:
        raise _unknown_delivery()
    return Delivery.model_validate(dict(row))
