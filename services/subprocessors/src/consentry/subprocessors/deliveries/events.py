"""The events of the subprocessors service (topic `consentry.subprocessor.v1`), keyed like
the subject's other events (`<tenant>/<subject ref>`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from consentry.eventing import catalogue
from consentry.eventing.envelope import Event
from consentry.subprocessors.signing import webhook_id
from consentry.subprocessors.v1 import subprocessors_pb2

SOURCE = "/consentry/subprocessors"
KINDS = {
    "erasure": subprocessors_pb2.NOTICE_KIND_ERASURE,
    "consent-withdrawn": subprocessors_pb2.NOTICE_KIND_CONSENT_WITHDRAWN,
}


def _timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def recipients_selected(
    *,
    tenant_id: UUID,
    subject_ref: str,
    request_id: str,
    kind: str,
    recipient_ids: Sequence[UUID],
    selected_at: datetime,
) -> Event:
    """The recipients that must be told about a request's subject (possibly none)."""
    message = subprocessors_pb2.RecipientsSelected(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=request_id,
        kind=KINDS[kind],
        recipient_ids=[str(recipient) for recipient in recipient_ids],
        selected_at=_timestamp(selected_at),
    )
    return Event(catalogue.RECIPIENTS_SELECTED, str(tenant_id), subject_ref, message, SOURCE)


def delivery_acknowledged(
    *,
    tenant_id: UUID,
    subject_ref: str,
    request_id: str,
    kind: str,
    recipient_id: UUID,
    delivery_id: UUID,
    first_sent_at: datetime | None,
    acknowledged_at: datetime,
    attempts: int,
) -> Event:
    """A recipient confirmed a notice with a valid signature."""
    message = subprocessors_pb2.DeliveryAcknowledged(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=request_id,
        kind=KINDS[kind],
        recipient_id=str(recipient_id),
        webhook_id=webhook_id(delivery_id),
        first_sent_at=_timestamp(first_sent_at),
        acknowledged_at=_timestamp(acknowledged_at),
        attempts=attempts,
    )
    return Event(catalogue.DELIVERY_ACKNOWLEDGED, str(tenant_id), subject_ref, message, SOURCE)


def delivery_dead_lettered(
    *,
    tenant_id: UUID,
    subject_ref: str,
    request_id: str,
    kind: str,
    recipient_id: UUID,
    delivery_id: UUID,
    first_sent_at: datetime | None,
    dead_lettered_at: datetime,
    attempts: int,
    last_error: str,
) -> Event:
    """A notice could not be delivered (or was never acknowledged) within the window."""
    message = subprocessors_pb2.DeliveryDeadLettered(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=request_id,
        kind=KINDS[kind],
        recipient_id=str(recipient_id),
        webhook_id=webhook_id(delivery_id),
        first_sent_at=_timestamp(first_sent_at),
        dead_lettered_at=_timestamp(dead_lettered_at),
        attempts=attempts,
        last_error=last_error,
    )
    return Event(catalogue.DELIVERY_DEAD_LETTERED, str(tenant_id), subject_ref, message, SOURCE)
