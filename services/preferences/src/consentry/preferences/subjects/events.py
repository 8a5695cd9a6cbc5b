"""The preferences events of one change (protobuf, through the outbox)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from consentry.eventing import catalogue
from consentry.eventing.envelope import Event, to_timestamp
from consentry.preferences.subjects.models import Method
from consentry.preferences.v1 import preferences_pb2

SOURCE = "/consentry/preferences"
METHODS = {
    Method.API: preferences_pb2.PREFERENCE_METHOD_API,
    Method.ONE_CLICK: preferences_pb2.PREFERENCE_METHOD_ONE_CLICK,
    Method.PREFERENCE_CENTER: preferences_pb2.PREFERENCE_METHOD_PREFERENCE_CENTER,
}


def _event(
    event_type: catalogue.EventType,
    tenant_id: UUID,
    subject_ref: str,
    message: preferences_pb2.PreferencesUpdated | preferences_pb2.PreferencesUnsubscribed,
    at: datetime,
) -> Event:
    return Event(
        type=event_type,
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        message=message,
        source=SOURCE,
        id=str(uuid.uuid4()),
        time=at,
    )


def updated(
    *,
    tenant_id: UUID,
    subject_ref: str,
    version: int,
    changes: Sequence[tuple[str, str, bool, str]],
    method: Method,
    at: datetime,
) -> Event:
    """`preferences.updated`: the changed (topic, channel, subscribed, category) rows."""
    message = preferences_pb2.PreferencesUpdated(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        subject_version=version,
        changes=[
            preferences_pb2.TopicPreference(
                topic=topic, channel=channel, subscribed=subscribed, category=category
            )
            for topic, channel, subscribed, category in changes
        ],
        method=METHODS[method],
        occurred_at=to_timestamp(at),
    )
    return _event(catalogue.PREFERENCES_UPDATED, tenant_id, subject_ref, message, at)


def unsubscribed(
    *,
    tenant_id: UUID,
    subject_ref: str,
    version: int,
    topic: str | None,
    channels: Sequence[str],
    method: Method,
    at: datetime,
) -> Event:
    """`preferences.unsubscribed`: the subject left a marketing topic (or all marketing)."""
    message = preferences_pb2.PreferencesUnsubscribed(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        subject_version=version,
        topic=topic or "",
        channels=sorted(channels),
        method=METHODS[method],
        occurred_at=to_timestamp(at),
        all_marketing=topic is None,
    )
    return _event(catalogue.PREFERENCES_UNSUBSCRIBED, tenant_id, subject_ref, message, at)
