"""A subject's communication preferences: per topic and channel."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from consentry.preferences.topics.models import TOPIC_PATTERN, Category, Channel

# Deliberately simple (RFC 5322 allows far more): one @, no spaces, a dot in the domain.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MAX_CHANGES = 100


class Method(StrEnum):
    """How a change was made (recorded on the events)."""

    API = "api"
    ONE_CLICK = "one-click"
    PREFERENCE_CENTER = "preference-center"


def _email(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError("not an e-mail address")
    return value


Email = Annotated[str, AfterValidator(_email)]
TopicName = Annotated[str, Field(pattern=TOPIC_PATTERN)]


class PreferenceChange(BaseModel):
    """Subscribe to or leave one topic, on one channel or (no channel) all its channels."""

    model_config = ConfigDict(extra="forbid")

    topic: TopicName
    channel: Channel | None = Field(default=None, description="omitted: every channel")
    subscribed: bool


class PreferencesUpdate(BaseModel):
    """Changes to apply together (all or none)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "changes": [
                        {"topic": "product-news", "channel": "email", "subscribed": True},
                        {"topic": "partner-offers", "subscribed": False},
                    ]
                }
            ]
        },
    )

    changes: list[PreferenceChange] = Field(min_length=1, max_length=MAX_CHANGES)


class UnsubscribeRequest(BaseModel):
    """Leave one marketing topic, or (no topic) every marketing topic."""

    model_config = ConfigDict(extra="forbid")

    topic: TopicName | None = Field(default=None, description="omitted: all marketing")
    channel: Channel | None = Field(default=None, description="omitted: every channel")


class ContactIn(BaseModel):
    """The subject's e-mail address for sending (stored encrypted under a per-subject key)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"email": "a@b.se"}]})

    email: Email


class TopicState(BaseModel):
    """One topic as the subject has it."""

    topic: str
    category: Category
    channels: dict[Channel, bool] = Field(description="subscribed per channel the topic offers")


class PreferencesView(BaseModel):
    """A subject's preferences (transactional topics are always on)."""

    subject_ref: str = Field(description="the pseudonymous reference (same in every service)")
    version: int = Field(description="increases with every change")
    all_marketing_unsubscribed: bool
    marketing_consent: bool | None = Field(
        description="the `marketing-email` consent as last learnt from the consent service "
        "(null: no decision known); marketing topics need it"
    )
    has_contact: bool
    topics: list[TopicState]
