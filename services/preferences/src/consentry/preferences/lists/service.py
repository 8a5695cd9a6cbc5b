"""Marketing-list rules: how preference and consent events change list membership and the
suppression list, and what the list API answers.

Rules (docs/lists.md):

- Lists exist for marketing topics, per topic and channel. `preferences.updated` with
  `subscribed` true adds the subject to the (topic, channel) list, false removes it.
- `preferences.unsubscribed` removes the subject from the lists it left and suppresses it
  there (reason `unsubscribed`; topic '' = every marketing topic, channel '' = every channel).
- `marketing-email` consent withdrawn suppresses the subject on every list (reason
  `consent-withdrawn`); given again lifts that suppression, and only that one.
- A later explicit subscription (a newer `preferences.updated` with subscribed true, which
  the preferences service accepts only with consent) lifts the `unsubscribed` suppressions
  covering that (topic, channel). A broader one (all marketing, or a whole topic) is narrowed
  to the tenant's other marketing (topic, channel) pairs, keeping its time and version.
- `erased` (`suppress_erased`, the erasure handler) is never lifted.
- Stale events are ignored: each subject keeps the last applied preferences version and
  consent version; an event with an older version changes nothing, one with the same version
  is applied again (state-based: `preferences.updated` and `preferences.unsubscribed` of one
  change share a version).
- Sendable = member of the list, `marketing-email` consent given as the processor last learnt
  it, and no suppression covering the topic and channel.
- Each new suppression publishes `consentry.lists.member_suppressed.v1` through the outbox,
  in the same transaction.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from consentry.consent.v1 import consent_pb2
from consentry.eventing import catalogue, outbox
from consentry.eventing.db import Connection, set_tenant
from consentry.eventing.envelope import Event, PoisonMessage, ReceivedEvent, utcnow
from consentry.httpapi.problems import Problem
from consentry.preferences import contacts
from consentry.preferences.lists import repository
from consentry.preferences.lists.cache import ListCache
from consentry.preferences.lists.models import ALL, Member, MemberPage, SuppressionReason, Verdict
from consentry.preferences.tenants import TenantKeys
from consentry.preferences.topics import repository as topics_repository
from consentry.preferences.topics.models import TOPIC_PATTERN, Category, Channel
from consentry.preferences.v1 import lists_pb2, preferences_pb2

SOURCE = "/consentry/preferences"
MARKETING_PURPOSE = "marketing-email"
_REF = re.compile(r"^[0-9a-f]{64}$")
_TOPIC = re.compile(TOPIC_PATTERN)
_CHANNELS = frozenset(channel.value for channel in Channel)
_REASONS = {
    SuppressionReason.UNSUBSCRIBED: lists_pb2.SUPPRESSION_REASON_UNSUBSCRIBED,
    SuppressionReason.CONSENT_WITHDRAWN: lists_pb2.SUPPRESSION_REASON_CONSENT_WITHDRAWN,
    SuppressionReason.ERASED: lists_pb2.SUPPRESSION_REASON_ERASED,
}
# The reason ranks of `list_members.blocked` and the filter (repository), most serious first.
VERDICTS = {
    1: Verdict.ERASED,
    2: Verdict.CONSENT_WITHDRAWN,
    3: Verdict.UNSUBSCRIBED,
    4: Verdict.NO_CONSENT,
    5: Verdict.NOT_SUBSCRIBED,
}

# The change feed of the API's list copies: kept this long, pruned every so many generations.
CHANGE_RETENTION_S = 600.0
PRUNE_EVERY = 500
Pair = tuple[str, str]  # (topic, channel)
_ABSENT = -1  # not a member (a list copy's values are a rank or None)
Key = tuple[str, str, str]  # a suppression: (topic, channel, reason)


# --- what an event means for the lists


@dataclass(frozen=True)
class PreferencesChange:
    """`preferences.updated`: marketing (topic, channel) pairs joined and left."""

    version: int
    joined: tuple[Pair, ...] = ()
    left: tuple[Pair, ...] = ()


@dataclass(frozen=True)
class Unsubscribe:
    """`preferences.unsubscribed`: a topic ('' = all marketing) on channels (() = all)."""

    version: int
    topic: str
    channels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsentChange:
    """A `marketing-email` decision (consent service version)."""

    version: int
    given: bool


@dataclass(frozen=True)
class Erasure:
    """The subject was erased (`version` None: the subject's latest known version)."""

    version: int | None = None


Change = PreferencesChange | Unsubscribe | ConsentChange | Erasure


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise PoisonMessage("schema-violation", what)


def _pair(topic: str, channel: str) -> Pair:
    _check(bool(_TOPIC.match(topic)), "topic is not a topic name")
    _check(channel in _CHANNELS, "channel is not email, sms or push")
    return topic, channel


def change_of(event: ReceivedEvent) -> Change | None:
    """What `event` means for the lists, or None when nothing (another purpose, another event
    type). Raises PoisonMessage for content the lists cannot hold."""
    message = event.message
    if isinstance(message, preferences_pb2.PreferencesUpdated):
        _check(bool(_REF.match(event.subject_ref)), "subject_ref is not 64 hex characters")
        joined: list[Pair] = []
        left: list[Pair] = []
        for change in message.changes:
            pair = _pair(change.topic, change.channel)
            if change.category == Category.MARKETING.value:  # transactional: no list
                (joined if change.subscribed else left).append(pair)
        return PreferencesChange(message.subject_version, tuple(joined), tuple(left))
    if isinstance(message, preferences_pb2.PreferencesUnsubscribed):
        _check(bool(_REF.match(event.subject_ref)), "subject_ref is not 64 hex characters")
        if message.all_marketing:
            return Unsubscribe(message.subject_version, ALL)
        channels = tuple(_pair(message.topic, channel)[1] for channel in message.channels)
        _pair(message.topic, Channel.EMAIL.value)  # the topic name alone
        return Unsubscribe(message.subject_version, message.topic, channels)
    if isinstance(message, consent_pb2.ConsentGiven | consent_pb2.ConsentWithdrawn):
        if message.decision.purpose != MARKETING_PURPOSE:
            return None
        _check(bool(_REF.match(event.subject_ref)), "subject_ref is not 64 hex characters")
        given = isinstance(message, consent_pb2.ConsentGiven)
        return ConsentChange(message.decision.subject_version, given)
    return None


# --- the fold: one subject's changes applied to its state, in order


@dataclass
class SubjectLists:
    """One subject's list state while a batch is applied (then written back)."""

    ref: str
    preferences_version: int
    consent_version: int
    marketing_consent: bool | None
    suppressions: dict[Key, tuple[datetime, int]]
    drop_all: bool = False  # remove from every list (before `members` is applied)
    drop_topics: set[str] = field(default_factory=set)  # remove from the topic's lists
    members: dict[Pair, bool] = field(default_factory=dict)  # the last decision per list
    announce: set[Key] = field(default_factory=set)  # new suppressions to publish
    stale: int = 0


class Fold:
    """Applies changes to subjects' states; `topics` are the tenant's marketing topics and
    their channels (needed only to narrow a broad suppression)."""

    def __init__(self, now: datetime, topics: dict[str, list[str]] | None = None) -> None:
        self.now = now
        self.topics = topics or {}

    def apply(self, state: SubjectLists, change: Change) -> None:
        """Apply one change to `state` (or count it as stale)."""
        if isinstance(change, PreferencesChange | Unsubscribe):
            if change.version < state.preferences_version:
                state.stale += 1
                return
            state.preferences_version = change.version
        if isinstance(change, PreferencesChange):
            for pair in change.left:
                state.members[pair] = False
            for pair in change.joined:
                state.members[pair] = True
                self._lift_unsubscribed(state, pair, change.version)
        elif isinstance(change, Unsubscribe):
            self._unsubscribe(state, change)
        elif isinstance(change, ConsentChange):
            if change.version < state.consent_version:
                state.stale += 1
                return
            state.consent_version = change.version
            state.marketing_consent = change.given
            key = (ALL, ALL, SuppressionReason.CONSENT_WITHDRAWN.value)
            if change.given:
                self._lift(state, key)
            else:
                self._add(state, key, change.version)
        else:
            version = change.version or max(state.preferences_version, state.consent_version, 1)
            self._drop_all(state)
            self._add(state, (ALL, ALL, SuppressionReason.ERASED.value), version)

    def _unsubscribe(self, state: SubjectLists, change: Unsubscribe) -> None:
        reason = SuppressionReason.UNSUBSCRIBED.value
        if change.topic == ALL:
            self._drop_all(state)
            self._add(state, (ALL, ALL, reason), change.version)
        elif not change.channels:
            state.drop_topics.add(change.topic)
            for pair in [pair for pair in state.members if pair[0] == change.topic]:
                del state.members[pair]
            self._add(state, (change.topic, ALL, reason), change.version)
        else:
            for channel in change.channels:
                state.members[(change.topic, channel)] = False
                self._add(state, (change.topic, channel, reason), change.version)

    @staticmethod
    def _drop_all(state: SubjectLists) -> None:
        state.drop_all = True
        state.drop_topics.clear()
        state.members.clear()

    def _add(self, state: SubjectLists, key: Key, version: int) -> None:
        if key not in state.suppressions:
            state.suppressions[key] = (self.now, version)
            state.announce.add(key)

    @staticmethod
    def _lift(state: SubjectLists, key: Key) -> None:
        if key[2] != SuppressionReason.ERASED.value and key in state.suppressions:
            del state.suppressions[key]
            state.announce.discard(key)

    def _lift_unsubscribed(self, state: SubjectLists, pair: Pair, version: int) -> None:
        """An explicit subscription to `pair` lifts the `unsubscribed` suppressions covering
        it; a broader one stays in force for the other pairs it covered."""
        topic, channel = pair
        for key in list(state.suppressions):
            k_topic, k_channel, reason = key
            covers = k_topic in (ALL, topic) and k_channel in (ALL, channel)
            if reason != SuppressionReason.UNSUBSCRIBED.value or not covers:
                continue
            at, since = state.suppressions.pop(key)
            was_new = key in state.announce
            state.announce.discard(key)
            if (k_topic, k_channel) == pair:
                continue
            for other in self._covered(k_topic, k_channel):
                narrow = (*other, reason)
                if other != pair and narrow not in state.suppressions:
                    state.suppressions[narrow] = (at, since)
                    if was_new:  # never announced in its broad form: announce it now
                        state.announce.add(narrow)

    def _covered(self, topic: str, channel: str) -> Iterable[Pair]:
        for name, channels in sorted(self.topics.items()):
            if topic in (ALL, name):
                yield from ((name, c) for c in sorted(channels) if channel in (ALL, c))


# --- applying a batch in one transaction


@dataclass
class Applied:
    """What a batch did (for logs and tests)."""

    changes: int = 0
    stale: int = 0
    suppressed: int = 0


def suppressed_event(
    tenant_id: UUID, ref: str, topic: str, channel: str, reason: str, version: int, at: datetime
) -> Event:
    """`consentry.lists.member_suppressed.v1` for one new suppression."""
    when = Timestamp()
    when.FromDatetime(at)
    message = lists_pb2.ListMemberSuppressed(
        tenant_id=str(tenant_id),
        subject_ref=ref,
        topic=topic,
        channel=channel,
        reason=_REASONS[SuppressionReason(reason)],
        suppressed_at=when,
        subject_version=version,
    )
    return Event(
        type=catalogue.LIST_MEMBER_SUPPRESSED,
        tenant_id=str(tenant_id),
        subject_ref=ref,
        message=message,
        source=SOURCE,
        id=str(uuid.uuid4()),
        time=at,
    )


async def apply_changes(
    conn: Connection, tenant_id: UUID, changes: dict[str, list[Change]]
) -> Applied:
    """Apply each subject's changes (in order) on a connection scoped to `tenant_id`, in its
    transaction: a dozen multi-row statements for any number of subjects."""
    refs = sorted(changes)
    rows = await repository.lock_subjects(conn, tenant_id=tenant_id, refs=refs)
    known = await repository.suppressions_of(conn, tenant_id=tenant_id, refs=refs)
    joins = any(
        isinstance(change, PreferencesChange) and change.joined
        for subject in changes.values()
        for change in subject
    )
    topics = await repository.marketing_topics(conn, tenant_id=tenant_id) if joins else None
    fold = Fold(utcnow(), topics)
    applied = Applied()
    states = []
    for ref in refs:
        row = rows[ref]
        state = SubjectLists(
            ref,
            row["preferences_version"],
            row["consent_version"],
            row["marketing_consent"],
            dict(known[ref]),
        )
        for change in changes[ref]:
            fold.apply(state, change)
        applied.changes += len(changes[ref])
        applied.stale += state.stale
        states.append(state)
    await _write(conn, tenant_id, states, known)
    new = await repository.add_suppressions(
        conn,
        tenant_id=tenant_id,
        rows=[
            (s.ref, *key, *s.suppressions[key])
            for s in states
            for key in sorted(s.suppressions.keys() - known[s.ref].keys())
        ],
    )
    announce = {s.ref: s.announce for s in states}
    events = [
        suppressed_event(
            tenant_id,
            row["subject_ref"],
            row["topic"],
            row["channel"],
            row["reason"],
            row["subject_version"],
            fold.now,
        )
        for row in new
        if (row["topic"], row["channel"], row["reason"]) in announce[row["subject_ref"]]
    ]
    await outbox.add_many(conn, events)
    await repository.refresh_blocked(conn, tenant_id=tenant_id, refs=refs)
    # Last: the generation's row lock is held until commit (see migration 0002).
    generation = await repository.bump_generation(conn, tenant_id=tenant_id, refs=refs)
    if generation % PRUNE_EVERY == 0:
        await repository.prune_changes(conn, tenant_id=tenant_id, older_than_s=CHANGE_RETENTION_S)
    applied.suppressed = len(events)
    return applied


async def _write(
    conn: Connection,
    tenant_id: UUID,
    states: Sequence[SubjectLists],
    known: dict[str, dict[Key, tuple[datetime, int]]],
) -> None:
    """Store the folded states: versions, memberships (drops first), lifted suppressions."""
    await repository.update_subjects(
        conn,
        tenant_id=tenant_id,
        rows=[
            (s.ref, s.preferences_version, s.consent_version, s.marketing_consent) for s in states
        ],
    )
    await repository.drop_all_memberships(
        conn, tenant_id=tenant_id, refs=[s.ref for s in states if s.drop_all]
    )
    await repository.drop_topic_memberships(
        conn,
        tenant_id=tenant_id,
        pairs=[(s.ref, topic) for s in states for topic in sorted(s.drop_topics)],
    )
    await repository.change_memberships(
        conn,
        tenant_id=tenant_id,
        dropped=[(s.ref, *pair) for s in states for pair, on in s.members.items() if not on],
        added=[(s.ref, *pair) for s in states for pair, on in s.members.items() if on],
    )
    await repository.lift_suppressions(
        conn,
        tenant_id=tenant_id,
        keys=[
            (s.ref, *key)
            for s in states
            for key in sorted(known[s.ref].keys() - s.suppressions.keys())
        ],
    )


def group(events: Iterable[ReceivedEvent]) -> dict[UUID, dict[str, list[Change]]]:
    """The changes of `events` per tenant and subject, in event order; events that mean
    nothing to the lists are left out. Raises PoisonMessage at the first unusable one."""
    grouped: dict[UUID, dict[str, list[Change]]] = defaultdict(lambda: defaultdict(list))
    for event in events:
        change = change_of(event)
        if change is not None:
            grouped[UUID(event.tenant_id)][event.subject_ref].append(change)
    return grouped


async def apply_events(conn: Connection, events: Sequence[ReceivedEvent]) -> Applied:
    """Apply decoded events on a connection in a transaction (tenant by tenant: the
    transaction-local tenant setting changes between them)."""
    total = Applied()
    for tenant_id, changes in sorted(group(events).items()):
        await set_tenant(conn, tenant_id)
        applied = await apply_changes(conn, tenant_id, changes)
        total.changes += applied.changes
        total.stale += applied.stale
        total.suppressed += applied.suppressed
    return total


async def suppress_erased(
    conn: Connection, tenant_id: UUID, subject_ref: str, *, subject_version: int | None = None
) -> bool:
    """Put an erased subject on the suppression list for good (reason `erased`, every list)
    and off every list, publishing `member_suppressed` if it is new. For the erasure handler:
    call on a connection scoped to `tenant_id`, inside the erasure's transaction. True when
    the suppression is new."""
    if not conn.is_in_transaction():
        raise RuntimeError("suppress_erased must run inside the erasure's transaction")
    applied = await apply_changes(conn, tenant_id, {subject_ref: [Erasure(subject_version)]})
    return applied.suppressed > 0


async def suppress_erased_all(conn: Connection, tenant_id: UUID, subject_refs: list[str]) -> int:
    """`suppress_erased` for many subjects of one tenant in one fold (the rights worker's
    batches); how many suppressions are new."""
    if not conn.is_in_transaction():
        raise RuntimeError("suppress_erased_all must run inside the erasure's transaction")
    applied = await apply_changes(conn, tenant_id, {ref: [Erasure()] for ref in subject_refs})
    return applied.suppressed


# --- the list API


async def list_topic(conn: Connection, *, tenant_id: UUID, topic: str, channel: Channel) -> None:
    """Check that `topic` is a marketing topic of the tenant sent on `channel` (Problem if
    not): lists exist for marketing topics only."""
    row = await topics_repository.get_topic(conn, tenant_id=tenant_id, name=topic)
    if row is None:
        raise Problem(
            404, "list-not-found", "No such list", detail="no topic by that name", topic=topic
        )
    if row["category"] != Category.MARKETING.value:
        raise Problem(
            422,
            "not-a-marketing-list",
            "Transactional topics have no list",
            detail=f"{topic} is transactional: it is sent to whoever the message concerns, "
            "whatever their preferences, so there is no list to fetch or filter",
            topic=topic,
        )
    if channel.value not in row["channels"]:
        raise Problem(
            422,
            "channel-not-offered",
            "The topic is not sent on that channel",
            topic=topic,
            channel=channel.value,
        )


async def members(
    conn: Connection,
    *,
    keys: TenantKeys,
    topic: str,
    channel: Channel,
    after: str,
    limit: int,
) -> MemberPage:
    """One page of the list's sendable members, each with its contact sealed for delivery."""
    await list_topic(conn, tenant_id=keys.tenant_id, topic=topic, channel=channel)
    rows = await repository.members_page(
        conn, tenant_id=keys.tenant_id, topic=topic, channel=channel.value, after=after, limit=limit
    )
    page = []
    for row in rows:
        ref, sealed_key, sealed_contact = row["subject_ref"], row[1], row[2]
        contact = None
        if channel is Channel.EMAIL and sealed_key is not None and sealed_contact is not None:
            data_key = contacts.open_data_key(keys, ref, sealed_key)
            email = contacts.open_contact(data_key, ref, sealed_contact)
            contact = contacts.for_delivery(keys, ref, email)
        page.append(Member(subject_ref=ref, contact=contact))
    last = page[-1].subject_ref if len(page) == limit else None
    return MemberPage(topic=topic, channel=channel, members=page, next=last)


async def filter_refs(
    conn: Connection,
    *,
    tenant_id: UUID,
    topic: str,
    channel: Channel,
    refs: Sequence[str],
    cache: ListCache | None = None,
) -> tuple[list[str], list[tuple[str, Verdict]]]:
    """Split a proposed send list: (sendable refs, [(refused ref, why)]), each ref once, in
    the order first given. Members are looked up in the list's in-memory copy when `cache`
    holds one (see `cache`), else in the database; the others' reasons come from the
    database."""
    await list_topic(conn, tenant_id=tenant_id, topic=topic, channel=channel)
    distinct = list(dict.fromkeys(refs))
    members = (
        None
        if cache is None
        else await cache.members(conn, tenant_id=tenant_id, topic=topic, channel=channel.value)
    )
    if members is None:
        ranks = await repository.refused(
            conn, tenant_id=tenant_id, topic=topic, channel=channel.value, refs=distinct
        )
    else:
        ranks = {}
        others = []
        lookup = members.get
        for ref in distinct:
            blocked = lookup(ref, _ABSENT)
            if blocked is None:
                continue  # the common case: a sendable member
            if blocked == _ABSENT:
                others.append(ref)
            else:
                ranks[ref] = blocked
        if others:
            ranks.update(
                await repository.why_not(
                    conn, tenant_id=tenant_id, topic=topic, channel=channel.value, refs=others
                )
            )
    if not ranks:
        return distinct, []
    sendable = [ref for ref in distinct if ref not in ranks]
    return sendable, [(ref, VERDICTS[ranks[ref]]) for ref in distinct if ref in ranks]
