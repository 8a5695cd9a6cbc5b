"""Rules behind the links and pages: making tokens, what the preference center shows, and
applying its form.

The page's changes run on a tenant-scoped connection in the caller's transaction and reuse the
preference rules of `subjects.service` (method `preference-center` or `one-click`). Consent is
not this service's to change: a consent ticked or unticked on the page becomes a
`consentry.consent.capture_requested.v1` event through this service's outbox, in the same
transaction, and the consent service's intake worker records it (this service's copy catches
up from the consent topic a moment later).

A form only changes what the person changed: it carries the state each box was shown in, and
only boxes that differ from that are applied. An untouched box never overwrites a change made
meanwhile elsewhere (a one-click unsubscribe in another tab, a consent still on its way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from google.protobuf.timestamp_pb2 import Timestamp

from consentry.consent.v1 import consent_pb2
from consentry.eventing import catalogue, outbox
from consentry.eventing.db import Connection
from consentry.eventing.envelope import Event, utcnow
from consentry.httpapi.problems import Problem
from consentry.preferences.links import tokens
from consentry.preferences.subjects import service as subjects
from consentry.preferences.subjects.events import SOURCE
from consentry.preferences.subjects.models import Method, PreferenceChange, PreferencesView
from consentry.preferences.tenants import TenantKeys
from consentry.preferences.topics.models import Channel, TopicOut
from consentry.preferences.topics.service import topics_by_name

MARKETING_PURPOSE = "marketing-email"
# The consent service refuses to withdraw `required` (purpose-not-withdrawable): shown as on.
ALWAYS_ON_PURPOSES = frozenset({"required"})
CAPTURE_SOURCE = "preference-center"
CONSENT_REQUIRED = "marketing-consent-required"

_CONSENTS = """
SELECT purpose, given FROM consent_copy WHERE tenant_id = $1 AND subject_ref = $2
ORDER BY purpose
"""
_POLICY = "SELECT version FROM tenant_policy WHERE tenant_id = $1"


def issue_link(
    keys: TenantKeys,
    *,
    purpose: tokens.Purpose,
    subject_ref: str,
    days: int,
    topic: str | None = None,
    locale: str | None = None,
    now: datetime | None = None,
) -> tuple[str, datetime]:
    """A token for the subject and when it expires (whole seconds)."""
    expires_at = ((now or utcnow()) + timedelta(days=days)).replace(microsecond=0)
    claims = tokens.LinkClaims(
        purpose=purpose,
        tenant_id=keys.tenant_id,
        subject_ref=subject_ref,
        expires_at=expires_at,
        topic=topic,
        locale=locale,
    )
    return tokens.issue(keys.link_key, claims), expires_at


async def check_unsubscribable(conn: Connection, *, tenant_id: UUID, topic: str) -> None:
    """Raise the preference rules' problem unless `topic` is a marketing topic of the tenant
    (422 `unknown-topic` or `topic-not-unsubscribable`)."""
    topics = await topics_by_name(conn, tenant_id=tenant_id)
    # The very check `PATCH .../preferences` makes (one rule, one place).
    subjects.resolve_changes(topics, [PreferenceChange(topic=topic, subscribed=False)])


async def _known_consents(
    conn: Connection, tenant_id: UUID, subject_ref: str
) -> dict[str, bool | None]:
    """The subject's consents in this service's copy, and marketing-email always."""
    rows = await conn.fetch(_CONSENTS, tenant_id, subject_ref)
    known: dict[str, bool | None] = {row["purpose"]: row["given"] for row in rows}
    known.setdefault(MARKETING_PURPOSE, None)
    return known


@dataclass(frozen=True)
class Consent:
    """One consent purpose as the page shows it."""

    purpose: str
    given: bool | None  # None: no decision known here
    editable: bool


@dataclass(frozen=True)
class Center:
    """What the preference center shows for a subject."""

    view: PreferencesView
    topics: dict[str, TopicOut]
    consents: list[Consent]
    policy_version: str | None  # None: consents are read-only


async def load_center(conn: Connection, *, tenant_id: UUID, subject_ref: str) -> Center:
    """The subject's topics, preferences and consents (this service's copy)."""
    topics = await topics_by_name(conn, tenant_id=tenant_id)
    view = await subjects.view(conn, tenant_id=tenant_id, subject_ref=subject_ref)
    policy_version: str | None = await conn.fetchval(_POLICY, tenant_id)
    known = await _known_consents(conn, tenant_id, subject_ref)
    consents = [
        Consent(
            purpose=purpose,
            given=given,
            editable=policy_version is not None and purpose not in ALWAYS_ON_PURPOSES,
        )
        for purpose, given in sorted(known.items(), key=lambda item: item[0] != MARKETING_PURPOSE)
    ]
    return Center(view=view, topics=topics, consents=consents, policy_version=policy_version)


@dataclass(frozen=True)
class Submission:
    """A posted preference-center form: what each box was shown as and which are ticked."""

    shown: Mapping[tuple[str, str], bool]
    ticked: frozenset[tuple[str, str]]
    consents_shown: Mapping[str, bool]
    consents_ticked: frozenset[str]

    def changes(self) -> list[PreferenceChange]:
        """The topic boxes the person changed."""
        return [
            PreferenceChange(topic=topic, channel=Channel(channel), subscribed=now)
            for (topic, channel), was in sorted(self.shown.items())
            if (now := (topic, channel) in self.ticked) != was
        ]

    def decisions(self) -> dict[str, bool]:
        """The consent boxes the person changed: purpose -> given."""
        return {
            purpose: now
            for purpose, was in sorted(self.consents_shown.items())
            if (now := purpose in self.consents_ticked) != was
        }


@dataclass(frozen=True)
class Applied:
    """What a submission did."""

    changed: bool
    consent_requested: dict[str, bool] = field(default_factory=dict)
    awaiting_consent: list[str] = field(default_factory=list)  # topics not joined


def capture_requested(
    *,
    tenant_id: UUID,
    subject_ref: str,
    policy_version: str,
    decisions: Mapping[str, bool],
    at: datetime,
) -> Event:
    """`consent.capture_requested` for the consent service's intake worker."""
    occurred_at = Timestamp()
    occurred_at.FromDatetime(at)
    message = consent_pb2.ConsentCaptureRequested(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        policy_version=policy_version,
        decisions=[
            consent_pb2.PurposeDecision(
                purpose=purpose,
                status=consent_pb2.CONSENT_STATUS_GIVEN
                if given
                else consent_pb2.CONSENT_STATUS_WITHDRAWN,
            )
            for purpose, given in sorted(decisions.items())
        ],
        method=consent_pb2.CONSENT_METHOD_PREFERENCE_PAGE,
        source=CAPTURE_SOURCE,
        occurred_at=occurred_at,
    )
    return Event(
        type=catalogue.CONSENT_CAPTURE_REQUESTED,
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        message=message,
        source=SOURCE,
        time=at,
    )


async def _change(
    conn: Connection, tenant_id: UUID, subject_ref: str, changes: Sequence[PreferenceChange]
) -> bool:
    outcome = await subjects.change(
        conn,
        tenant_id=tenant_id,
        subject_ref=subject_ref,
        changes=changes,
        method=Method.PREFERENCE_CENTER,
    )
    return outcome.version is not None


async def apply(
    conn: Connection, *, tenant_id: UUID, subject_ref: str, submission: Submission
) -> Applied:
    """Apply a preference-center form in the caller's transaction.

    Joining a marketing topic without the marketing-email consent known here does not fail the
    rest: the other changes and the consent decisions still apply, and the topics come back in
    `awaiting_consent`. Any other refusal (a stale or altered form) raises its Problem, and the
    caller's transaction rolls everything back.
    """
    changes = submission.changes()
    changed = False
    awaiting: list[str] = []
    if changes:
        try:
            async with conn.transaction():  # a savepoint: a refusal undoes only this attempt
                changed = await _change(conn, tenant_id, subject_ref, changes)
        except Problem as problem:
            if problem.slug != CONSENT_REQUIRED:
                raise
            awaiting = list(problem.extensions.get("topics", []))
            rest = [change for change in changes if not change.subscribed]
            if rest:
                changed = await _change(conn, tenant_id, subject_ref, rest)
    policy_version: str | None = await conn.fetchval(_POLICY, tenant_id)
    # Only purposes the page offers (an altered form cannot name others).
    offered = set(await _known_consents(conn, tenant_id, subject_ref)) - ALWAYS_ON_PURPOSES
    decisions = {
        purpose: given for purpose, given in submission.decisions().items() if purpose in offered
    }
    if policy_version is None or not decisions:
        return Applied(changed=changed, awaiting_consent=awaiting)
    await outbox.add(
        conn,
        capture_requested(
            tenant_id=tenant_id,
            subject_ref=subject_ref,
            policy_version=policy_version,
            decisions=decisions,
            at=utcnow(),
        ),
    )
    return Applied(changed=changed, consent_requested=decisions, awaiting_consent=awaiting)


async def unsubscribe(
    conn: Connection, *, tenant_id: UUID, subject_ref: str, topic: str | None, method: Method
) -> bool:
    """Leave `topic` (None: all marketing) on every channel; False when nothing changed."""
    outcome = await subjects.unsubscribe(
        conn, tenant_id=tenant_id, subject_ref=subject_ref, topic=topic, channel=None, method=method
    )
    return outcome.version is not None
