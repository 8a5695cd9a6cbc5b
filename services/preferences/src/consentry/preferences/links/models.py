"""Requests and answers of the link-making API (the sending system asks for them per mail)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from consentry.preferences.subjects.models import TopicName

Locale = Literal["en", "sv"]
ONE_CLICK = "List-Unsubscribe=One-Click"


class UnsubscribeLinkRequest(BaseModel):
    """A one-click unsubscribe link for one marketing topic, or (no topic) all marketing."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"topic": "product-news", "locale": "sv"}]},
    )

    topic: TopicName | None = Field(
        default=None, description="a marketing topic; omitted: all marketing"
    )
    locale: Locale | None = Field(
        default=None, description="the pages' language; omitted: the reader's browser decides"
    )


class PreferenceLinkRequest(BaseModel):
    """A preference-center link."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"locale": "en"}]})

    locale: Locale | None = Field(
        default=None, description="the page's language; omitted: the reader's browser decides"
    )


class MailHeaders(BaseModel):
    """The RFC 8058 header values to put, as they are, into the marketing mail."""

    model_config = ConfigDict(populate_by_name=True)

    list_unsubscribe: str = Field(
        alias="List-Unsubscribe", description="the HTTPS unsubscribe URL in angle brackets"
    )
    list_unsubscribe_post: str = Field(
        default=ONE_CLICK, alias="List-Unsubscribe-Post", description="always `" + ONE_CLICK + "`"
    )


class PreferenceLink(BaseModel):
    """A preference-center link."""

    url: str = Field(description="the preference-center page (no login; keep it private)")
    expires_at: datetime


class UnsubscribeLinks(BaseModel):
    """A one-click unsubscribe link, its mail headers, and a preference-center link."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://preferences.example.com/u/AQEAAAAA…",
                    "preference_center_url": "https://preferences.example.com/p/AQIAAAAA…",
                    "expires_at": "2027-05-01T12:00:00Z",
                    "preference_center_expires_at": "2026-05-31T12:00:00Z",
                    "headers": {
                        "List-Unsubscribe": "<https://preferences.example.com/u/AQEAAAAA…>",
                        "List-Unsubscribe-Post": ONE_CLICK,
                    },
                }
            ]
        }
    )

    url: str = Field(description="the unsubscribe page: GET confirms, POST one-click")
    preference_center_url: str
    expires_at: datetime = Field(description="when the unsubscribe link stops working")
    preference_center_expires_at: datetime
    headers: MailHeaders
