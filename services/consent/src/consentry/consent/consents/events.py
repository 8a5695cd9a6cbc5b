"""Mapping of consent decisions to their protobuf events."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from consentry.consent.consents.models import ConsentMethod, ConsentStatus, RecordedDecision
from consentry.consent.v1 import consent_pb2
from consentry.eventing import catalogue, tracing
from consentry.eventing.envelope import Event

SOURCE = "/consentry/consent"

# How each method is written in the protobuf events.
METHODS = {
    ConsentMethod.API: consent_pb2.CONSENT_METHOD_API,
    ConsentMethod.BANNER: consent_pb2.CONSENT_METHOD_BANNER,
    ConsentMethod.PREFERENCE_PAGE: consent_pb2.CONSENT_METHOD_PREFERENCE_PAGE,
    ConsentMethod.IMPORT: consent_pb2.CONSENT_METHOD_IMPORT,
    ConsentMethod.GPC: consent_pb2.CONSENT_METHOD_GPC,
}


def decision_event(decision: RecordedDecision, trace: tracing.TraceHeaders | None = None) -> Event:
    """The `consent.given` or `consent.withdrawn` event of one recorded decision, in `trace`
    (that of the capture; else the current one)."""
    timestamp = Timestamp()
    timestamp.FromDatetime(decision.occurred_at)
    facts = consent_pb2.ConsentDecision(
        tenant_id=str(decision.tenant_id),
        subject_ref=decision.subject_ref,
        purpose=decision.purpose,
        policy_version=decision.policy_version,
        occurred_at=timestamp,
        subject_version=decision.subject_version,
        method=METHODS[decision.method],
        source=decision.source or "",
        receipt_id=str(decision.receipt_id) if decision.receipt_id else "",
        gpc=decision.gpc,
    )
    message: consent_pb2.ConsentGiven | consent_pb2.ConsentWithdrawn
    if decision.status is ConsentStatus.GIVEN:
        event_type, message = catalogue.CONSENT_GIVEN, consent_pb2.ConsentGiven(decision=facts)
    else:
        event_type, message = (
            catalogue.CONSENT_WITHDRAWN,
            consent_pb2.ConsentWithdrawn(decision=facts),
        )
    return Event(
        type=event_type,
        tenant_id=str(decision.tenant_id),
        subject_ref=decision.subject_ref,
        message=message,
        source=SOURCE,
        id=str(decision.event_id),
        time=decision.occurred_at,
        traceparent=trace.traceparent if trace else None,
        tracestate=trace.tracestate if trace else None,
    )
