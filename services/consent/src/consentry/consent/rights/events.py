"""Mapping of rights requests to their protobuf events (topic `consentry.rights.v1`; the
consent service's own answers on `consentry.rights.answers.v1`).

Per-subject events (ErasureRequested, ErasureCompleted, AccessRequested) have the subject's
key `<tenant>/<subject_ref>`, so they are in order with the subject's other events;
request-level events (RequestDeadline, RequestClosed) have the key `<tenant>/requests`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from consentry.consent.rights.deadlines import DeadlineStatus
from consentry.consent.rights.models import Requester, RequestKind
from consentry.eventing import catalogue
from consentry.eventing.envelope import Event, to_timestamp
from consentry.rights.v1 import rights_pb2

SOURCE = "/consentry/consent"
SERVICE = "consent"  # the `service` of the consent service's own ErasureCompleted

KINDS = {
    RequestKind.ERASURE: rights_pb2.REQUEST_KIND_ERASURE,
    RequestKind.ACCESS: rights_pb2.REQUEST_KIND_ACCESS,
    RequestKind.CORRECTION: rights_pb2.REQUEST_KIND_CORRECTION,
    RequestKind.CHILD_DATA_ERASURE: rights_pb2.REQUEST_KIND_CHILD_DATA_ERASURE,
}
REQUESTERS = {
    Requester.SUBJECT: rights_pb2.REQUESTER_SUBJECT,
    Requester.TENANT: rights_pb2.REQUESTER_TENANT,
}
DEADLINE_STATUSES = {
    DeadlineStatus.DUE_SOON: rights_pb2.DEADLINE_STATUS_DUE_SOON,
    DeadlineStatus.OVERDUE: rights_pb2.DEADLINE_STATUS_OVERDUE,
}


def erasure_requested(
    *,
    tenant_id: UUID,
    subject_ref: str,
    request_id: UUID,
    kind: RequestKind,
    requester: Requester,
    requested_at: datetime,
    due_at: datetime,
) -> Event:
    """`consentry.rights.erasure_requested.v1` for one subject of a request."""
    message = rights_pb2.ErasureRequested(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=str(request_id),
        kind=KINDS[kind],
        requester=REQUESTERS[requester],
        requested_at=to_timestamp(requested_at),
        due_at=to_timestamp(due_at),
    )
    return Event(catalogue.ERASURE_REQUESTED, str(tenant_id), subject_ref, message, SOURCE)


def erasure_completed(
    *,
    tenant_id: UUID,
    subject_ref: str,
    request_id: UUID,
    completed_at: datetime,
    erased: Sequence[str],
) -> Event:
    """`consentry.rights.erasure_completed.v1` of the consent service for one subject."""
    message = rights_pb2.ErasureCompleted(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=str(request_id),
        service=SERVICE,
        completed_at=to_timestamp(completed_at),
        erased=list(erased),
    )
    return Event(
        catalogue.ERASURE_COMPLETED, str(tenant_id), subject_ref, message, SOURCE, time=completed_at
    )


def access_requested(
    *,
    tenant_id: UUID,
    subject_ref: str,
    request_id: UUID,
    requested_at: datetime,
    export_public_key: bytes,
) -> Event:
    """`consentry.rights.access_requested.v1` for one subject: parts are sealed to the key."""
    message = rights_pb2.AccessRequested(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=str(request_id),
        requested_at=to_timestamp(requested_at),
        export_public_key=export_public_key,
    )
    return Event(catalogue.ACCESS_REQUESTED, str(tenant_id), subject_ref, message, SOURCE)


def access_part_ready(
    *,
    tenant_id: UUID,
    subject_ref: str,
    request_id: UUID,
    sealed_part: bytes,
    ready_at: datetime,
) -> Event:
    """`consentry.rights.access_part_ready.v1`: the consent service's sealed export part."""
    message = rights_pb2.AccessPartReady(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=str(request_id),
        service=SERVICE,
        sealed_part=sealed_part,
        ready_at=to_timestamp(ready_at),
    )
    return Event(
        catalogue.ACCESS_PART_READY, str(tenant_id), subject_ref, message, SOURCE, time=ready_at
    )


def request_deadline(
    *,
    tenant_id: UUID,
    request_id: UUID,
    kind: RequestKind,
    status: DeadlineStatus,
    due_at: datetime,
) -> Event:
    """`consentry.rights.request_deadline.v1`: the request is due soon or overdue."""
    message = rights_pb2.RequestDeadline(
        tenant_id=str(tenant_id),
        request_id=str(request_id),
        kind=KINDS[kind],
        status=DEADLINE_STATUSES[status],
        due_at=to_timestamp(due_at),
    )
    return Event(
        catalogue.REQUEST_DEADLINE, str(tenant_id), catalogue.REQUESTS_SUBJECT, message, SOURCE
    )


def request_closed(
    *,
    tenant_id: UUID,
    request_id: UUID,
    kind: RequestKind,
    completed: bool,
    closed_at: datetime,
    certificate: str = "",
    reason: str = "",
) -> Event:
    """`consentry.rights.request_closed.v1`: completed (with its certificate) or rejected."""
    message = rights_pb2.RequestClosed(
        tenant_id=str(tenant_id),
        request_id=str(request_id),
        kind=KINDS[kind],
        outcome=rights_pb2.REQUEST_OUTCOME_COMPLETED
        if completed
        else rights_pb2.REQUEST_OUTCOME_REJECTED,
        closed_at=to_timestamp(closed_at),
        certificate=certificate,
        reason=reason,
    )
    return Event(
        catalogue.REQUEST_CLOSED,
        str(tenant_id),
        catalogue.REQUESTS_SUBJECT,
        message,
        SOURCE,
        time=closed_at,
    )
