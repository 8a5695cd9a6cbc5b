"""Communication topics: what a tenant sends, by category and channel."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

TOPIC_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
LANGUAGES = ("en", "sv")


class Category(StrEnum):
    """Marketing may be left at any time; transactional (receipts, account notices) may not."""

    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


class Channel(StrEnum):
    """How a topic's messages reach people."""

    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


Text = Annotated[str, Field(min_length=1, max_length=500)]


class TopicIn(BaseModel):
    """A topic to create or update (the category of an existing topic never changes)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "category": "marketing",
                    "channels": ["email", "sms"],
                    "labels": {"en": "Product news", "sv": "Produktnyheter"},
                    "descriptions": {"en": "New features, monthly", "sv": "Nyheter, varje månad"},
                }
            ]
        },
    )

    category: Category
    channels: list[Channel] = Field(min_length=1, max_length=3)
    labels: dict[str, Text] = Field(
        default_factory=dict, description="display name per language (en, sv)"
    )
    descriptions: dict[str, Text] = Field(
        default_factory=dict, description="one line per language shown on the pages"
    )

    @field_validator("channels")
    @classmethod
    def _distinct(cls, channels: list[Channel]) -> list[Channel]:
        return sorted(set(channels))

    @field_validator("labels", "descriptions")
    @classmethod
    def _known_languages(cls, texts: dict[str, str]) -> dict[str, str]:
        unknown = set(texts) - set(LANGUAGES)
        if unknown:
            raise ValueError(f"languages are {', '.join(LANGUAGES)}; not {sorted(unknown)}")
        return texts


class TopicOut(TopicIn):
    """A topic of the tenant."""

    name: str
    created_at: datetime
    updated_at: datetime

    def label(self, language: str) -> str:
        """The topic's display name in `language` (English, then the name, as fallbacks)."""
        return self.labels.get(language) or self.labels.get("en") or self.name

    def description(self, language: str) -> str:
        """The topic's description in `language` (English as the fallback), or ''."""
        return self.descriptions.get(language) or self.descriptions.get("en") or ""


class TopicList(BaseModel):
    """The tenant's topics, by name."""

    topics: list[TopicOut]
