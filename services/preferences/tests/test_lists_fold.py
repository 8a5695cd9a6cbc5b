"""The list rules alone (no database): how changes fold into one subject's state, and what
an event means for the lists."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from consentry.eventing.envelope import PoisonMessage
from consentry.eventing.testing import consent_event
from consentry.preferences.lists.service import (
    ConsentChange,
    Erasure,
    Fold,
    PreferencesChange,
    SubjectLists,
    Unsubscribe,
    change_of,
)

from .test_lists_helpers import consent, joined, new_ref, received, unsubscribed

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
TOPICS = {"news": ["email", "sms"], "offers": ["email"]}
UNSUB, WITHDRAWN, ERASED = "unsubscribed", "consent-withdrawn", "erased"


def state(**suppressions: tuple[str, str, str]) -> SubjectLists:
    return SubjectLists("ab" * 32, 0, 0, None, dict.fromkeys(suppressions.values(), (NOW, 1)))


def test_unsubscribe_all_then_an_explicit_subscription_narrows_it() -> None:
    subject = state(old=("", "", UNSUB))
    Fold(NOW, TOPICS).apply(subject, PreferencesChange(2, joined=(("news", "email"),)))
    assert set(subject.suppressions) == {("news", "sms", UNSUB), ("offers", "email", UNSUB)}
    assert all(value == (NOW, 1) for value in subject.suppressions.values())  # kept as it was
    assert subject.announce == set()  # nothing new for the sending platforms
    assert subject.members == {("news", "email"): True}


def test_narrowing_a_suppression_new_in_the_same_batch_announces_the_rest() -> None:
    subject = state()
    fold = Fold(NOW, TOPICS)
    fold.apply(subject, Unsubscribe(1, ""))
    fold.apply(subject, PreferencesChange(2, joined=(("offers", "email"),)))
    assert subject.announce == {("news", "email", UNSUB), ("news", "sms", UNSUB)}
    assert subject.drop_all


def test_a_topic_unsubscribe_without_channels_covers_the_topic() -> None:
    subject = state()
    fold = Fold(NOW, TOPICS)
    fold.apply(subject, PreferencesChange(1, joined=(("news", "email"), ("offers", "email"))))
    fold.apply(subject, Unsubscribe(2, "news"))
    assert subject.drop_topics == {"news"}
    assert subject.members == {("offers", "email"): True}
    assert set(subject.suppressions) == {("news", "", UNSUB)}
    fold.apply(subject, PreferencesChange(3, joined=(("news", "sms"),)))
    assert set(subject.suppressions) == {("news", "email", UNSUB)}


def test_stale_changes_change_nothing() -> None:
    subject = state()
    fold = Fold(NOW, TOPICS)
    fold.apply(subject, PreferencesChange(5, joined=(("news", "email"),)))
    fold.apply(subject, ConsentChange(7, given=False))
    fold.apply(subject, Unsubscribe(4, ""))
    fold.apply(subject, ConsentChange(6, given=True))
    assert subject.stale == 2
    assert (subject.preferences_version, subject.consent_version) == (5, 7)
    assert subject.marketing_consent is False
    assert set(subject.suppressions) == {("", "", WITHDRAWN)}
    assert not subject.drop_all


def test_the_same_version_applies_again() -> None:
    # preferences.updated and preferences.unsubscribed of one change share a version.
    subject = state()
    fold = Fold(NOW, TOPICS)
    fold.apply(subject, PreferencesChange(3, left=(("news", "email"),)))
    fold.apply(subject, Unsubscribe(3, "news", ("email",)))
    assert subject.stale == 0
    assert set(subject.suppressions) == {("news", "email", UNSUB)}


def test_reconsent_lifts_only_the_consent_suppression_and_erased_stays() -> None:
    subject = state(a=("", "", UNSUB), b=("", "", WITHDRAWN), c=("", "", ERASED))
    fold = Fold(NOW, TOPICS)
    fold.apply(subject, ConsentChange(2, given=True))
    fold.apply(subject, PreferencesChange(2, joined=(("news", "email"),)))
    assert ("", "", ERASED) in subject.suppressions
    assert ("", "", WITHDRAWN) not in subject.suppressions
    fold.apply(subject, Erasure())
    assert subject.drop_all
    assert subject.members == {}
    assert subject.announce == set()  # erased was already there


def test_erasure_takes_the_latest_version() -> None:
    subject = state()
    subject.preferences_version, subject.consent_version = 4, 9
    Fold(NOW, TOPICS).apply(subject, Erasure())
    assert subject.suppressions == {("", "", ERASED): (NOW, 9)}
    assert subject.announce == {("", "", ERASED)}


def test_what_events_mean() -> None:
    tenant, ref = uuid.uuid4(), new_ref()
    updated, left, given, other, transactional = received(
        [
            joined(tenant, ref, 2, [("news", "email")]),
            unsubscribed(tenant, ref, 3, "news", ["email", "sms"]),
            consent(tenant, ref, 4, given=True),
            consent(tenant, ref, 5, given=True),
            joined(tenant, ref, 6, [("receipts", "email")], category="transactional"),
        ]
    )
    assert change_of(updated) == PreferencesChange(2, joined=(("news", "email"),))
    assert change_of(left) == Unsubscribe(3, "news", ("email", "sms"))
    assert change_of(given) == ConsentChange(4, given=True)
    assert change_of(transactional) == PreferencesChange(6)  # versions move, no list
    (other_purpose,) = received([consent_event(str(tenant), ref, 5, purpose="performance")])
    assert change_of(other_purpose) is None
    assert change_of(other) == ConsentChange(5, given=True)


@pytest.mark.parametrize(
    ("ref", "pairs"),
    [("not-hex", [("news", "email")]), (None, [("news", "fax")]), (None, [("News!", "email")])],
)
def test_content_the_lists_cannot_hold_is_poison(
    ref: str | None, pairs: list[tuple[str, str]]
) -> None:
    (event,) = received([joined(uuid.uuid4(), ref or new_ref(), 1, pairs)])
    with pytest.raises(PoisonMessage) as caught:
        change_of(event)
    assert caught.value.reason == "schema-violation"
