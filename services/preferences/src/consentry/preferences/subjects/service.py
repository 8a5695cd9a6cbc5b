"""Preference rules. Every change of a subject runs in one transaction with its events.

- Marketing topics are opt-in: no stored choice means not subscribed. Subscribing to one needs
  the `marketing-email` consent given in the consent service, as this service last learnt it
  from the consent topic (409 `marketing-consent-required` otherwise).
- Transactional topics cannot be left (422 `topic-not-unsubscribable`); they are always on.
- `unsubscribe` with no topic leaves every marketing topic on every channel and marks the
  subject as having left all marketing; an explicit later subscription clears that mark.
- A change that changes nothing records nothing (no version, no event): replaying a one-click
  unsubscribe is harmless.
- Each effective change bumps the subject's version by one and publishes
  `preferences.updated` (and `preferences.unsubscribed` when marketing was left), both with
  that version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from consentry.eventing import outbox
from consentry.eventing.db import Connection
from consentry.eventing.envelope import utcnow
from consentry.httpapi.problems import Problem
from consentry.preferences import contacts
from consentry.preferences.subjects import events, repository
from consentry.preferences.subjects.models import (
    Method,
    PreferenceChange,
    PreferencesView,
    TopicState,
)
from consentry.preferences.tenants import TenantKeys
from consentry.preferences.topics.models import Category, Channel, TopicOut
from consentry.preferences.topics.service import topics_by_name


@dataclass(frozen=True)
class Outcome:
    """What a change did: the subject's new version (None: nothing changed)."""

    version: int | None


def resolve_changes(
    topics: dict[str, TopicOut], changes: Sequence[PreferenceChange]
) -> dict[tuple[str, str], bool]:
    """The requested (topic, channel) -> subscribed, checked against the topics (422 for an
    unknown topic or channel, or for leaving a transactional topic)."""
    wanted: dict[tuple[str, str], bool] = {}
    for change in changes:
        topic = topics.get(change.topic)
        if topic is None:
            raise Problem(422, "unknown-topic", "No such topic", topic=change.topic)
        if change.channel is not None and change.channel not in topic.channels:
            raise Problem(
                422,
                "channel-not-offered",
                "The topic is not sent on that channel",
                topic=change.topic,
                channel=change.channel.value,
            )
        if topic.category is Category.TRANSACTIONAL:
            if not change.subscribed:
                raise Problem(
                    422,
                    "topic-not-unsubscribable",
                    "Transactional messages cannot be unsubscribed from",
                    detail=f"{change.topic} carries receipts and account notices, which are "
                    "sent whatever the preferences",
                    topic=change.topic,
                )
            continue  # always on: nothing to store
        for channel in [change.channel] if change.channel else topic.channels:
            wanted[(change.topic, channel.value)] = change.subscribed
    return wanted


async def _view(
    conn: Connection,
    *,
    tenant_id: UUID,
    subject_ref: str,
    topics: dict[str, TopicOut],
) -> PreferencesView:
    row = await repository.get_subject(conn, tenant_id=tenant_id, subject_ref=subject_ref)
    stored = await repository.preferences(conn, tenant_id=tenant_id, subject_ref=subject_ref)
    states = []
    for name, topic in topics.items():
        always = topic.category is Category.TRANSACTIONAL
        channels = {
            channel: always or stored.get((name, channel.value), False)
            for channel in topic.channels
        }
        states.append(TopicState(topic=name, category=topic.category, channels=channels))
    return PreferencesView(
        subject_ref=subject_ref,
        version=0 if row is None else row["version"],
        all_marketing_unsubscribed=row is not None
        and row["all_marketing_unsubscribed_at"] is not None,
        marketing_consent=await repository.marketing_consent(
            conn, tenant_id=tenant_id, subject_ref=subject_ref
        ),
        has_contact=row is not None and row["contact_email_sealed"] is not None,
        topics=states,
    )


async def view(conn: Connection, *, tenant_id: UUID, subject_ref: str) -> PreferencesView:
    """The subject's preferences over every topic of the tenant."""
    topics = await topics_by_name(conn, tenant_id=tenant_id)
    return await _view(conn, tenant_id=tenant_id, subject_ref=subject_ref, topics=topics)


async def _apply(
    conn: Connection,
    *,
    tenant_id: UUID,
    subject_ref: str,
    topics: dict[str, TopicOut],
    wanted: dict[tuple[str, str], bool],
    method: Method,
    left_all_marketing: bool = False,
) -> Outcome:
    subject = await repository.lock_subject(conn, tenant_id=tenant_id, subject_ref=subject_ref)
    assert subject is not None  # created by lock_subject
    stored = await repository.preferences(conn, tenant_id=tenant_id, subject_ref=subject_ref)
    # Explicit choices differing from what is stored (a first "no" is stored though it is the
    # default), and among them the ones that change the effective state (absent = not subscribed).
    to_store = [
        (topic, channel, subscribed)
        for (topic, channel), subscribed in sorted(wanted.items())
        if stored.get((topic, channel)) != subscribed
    ]
    effective = [c for c in to_store if stored.get((c[0], c[1]), False) != c[2]]
    joined = [c for c in effective if c[2]]
    if joined:
        consent = await repository.marketing_consent(
            conn, tenant_id=tenant_id, subject_ref=subject_ref
        )
        if consent is not True:
            raise Problem(
                409,
                "marketing-consent-required",
                "Marketing topics need the marketing-email consent",
                detail="record the consent purpose marketing-email as given in the consent "
                "service first; this service learns it from the consent topic within a second",
                topics=sorted({topic for topic, _, _ in joined}),
            )
    if to_store:
        await repository.upsert_preferences(
            conn, tenant_id=tenant_id, subject_ref=subject_ref, changes=to_store, method=method
        )
    already_left = subject["all_marketing_unsubscribed_at"] is not None
    mark_left = left_all_marketing and not already_left
    if not effective and not mark_left:
        return Outcome(None)
    version = await repository.bump_version(
        conn,
        tenant_id=tenant_id,
        subject_ref=subject_ref,
        left_all_marketing=mark_left,
        rejoined_marketing=bool(joined) and already_left,
    )
    at = utcnow()
    published = [
        (topic, channel, subscribed, topics[topic].category.value)
        for topic, channel, subscribed in effective
    ]
    to_publish = []
    if published:
        to_publish.append(
            events.updated(
                tenant_id=tenant_id,
                subject_ref=subject_ref,
                version=version,
                changes=published,
                method=method,
                at=at,
            )
        )
    left = [(topic, channel) for topic, channel, subscribed in effective if not subscribed]
    if left_all_marketing and (mark_left or left):
        to_publish.append(
            events.unsubscribed(
                tenant_id=tenant_id,
                subject_ref=subject_ref,
                version=version,
                topic=None,
                channels=sorted({channel for _, channel in left}),
                method=method,
                at=at,
            )
        )
    else:
        for topic in sorted({topic for topic, _ in left}):
            to_publish.append(
                events.unsubscribed(
                    tenant_id=tenant_id,
                    subject_ref=subject_ref,
                    version=version,
                    topic=topic,
                    channels=[channel for name, channel in left if name == topic],
                    method=method,
                    at=at,
                )
            )
    await outbox.add_many(conn, to_publish)
    return Outcome(version)


async def change(
    conn: Connection,
    *,
    tenant_id: UUID,
    subject_ref: str,
    changes: Sequence[PreferenceChange],
    method: Method,
) -> Outcome:
    """Apply `changes` together (all or none) on a tenant-scoped connection in a transaction."""
    topics = await topics_by_name(conn, tenant_id=tenant_id)
    wanted = resolve_changes(topics, changes)
    return await _apply(
        conn,
        tenant_id=tenant_id,
        subject_ref=subject_ref,
        topics=topics,
        wanted=wanted,
        method=method,
    )


async def unsubscribe(
    conn: Connection,
    *,
    tenant_id: UUID,
    subject_ref: str,
    topic: str | None,
    channel: Channel | None,
    method: Method,
) -> Outcome:
    """Leave one marketing topic (or, with no topic, all marketing); idempotent."""
    topics = await topics_by_name(conn, tenant_id=tenant_id)
    if topic is None:
        wanted = {
            (name, ch.value): False
            for name, spec in topics.items()
            if spec.category is Category.MARKETING
            for ch in spec.channels
        }
    else:
        wanted = resolve_changes(
            topics, [PreferenceChange(topic=topic, channel=channel, subscribed=False)]
        )
    return await _apply(
        conn,
        tenant_id=tenant_id,
        subject_ref=subject_ref,
        topics=topics,
        wanted=wanted,
        method=method,
        left_all_marketing=topic is None,
    )


async def set_contact(
    conn: Connection, *, keys: TenantKeys, subject_ref: str, email: str | None
) -> None:
    """Store the subject's e-mail address under its data key (made on first use); None
    removes the address (the data key stays until erasure)."""
    subject = await repository.lock_subject(conn, tenant_id=keys.tenant_id, subject_ref=subject_ref)
    assert subject is not None
    sealed_key = subject["data_key_sealed"]
    if email is None:
        await repository.set_contact(
            conn,
            tenant_id=keys.tenant_id,
            subject_ref=subject_ref,
            data_key_sealed=sealed_key,
            contact_sealed=None,
        )
        return
    if sealed_key is None:
        data_key, sealed_key = contacts.new_data_key(keys, subject_ref)
    else:
        data_key = contacts.open_data_key(keys, subject_ref, sealed_key)
    await repository.set_contact(
        conn,
        tenant_id=keys.tenant_id,
        subject_ref=subject_ref,
        data_key_sealed=sealed_key,
        contact_sealed=contacts.seal_contact(data_key, subject_ref, email),
    )
