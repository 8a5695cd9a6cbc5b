"""Request and response models of the API-keys API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints, field_validator

from consentry.httpapi.auth import Scope

KeyName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]


class ApiKeyCreate(BaseModel):
    """A key to create: a name for people and the scopes it grants."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "web shop backend", "scopes": ["consent:read", "consent:write"]}]
        },
    )

    name: KeyName = Field(description="what the key is for, e.g. the calling system")
    scopes: list[Scope] = Field(
        min_length=1, max_length=len(Scope), description="what the key may do"
    )

    @field_validator("scopes")
    @classmethod
    def _distinct_and_ordered(cls, scopes: list[Scope]) -> list[Scope]:
        return sorted(set(scopes))


_KEY_EXAMPLE: dict[str, JsonValue] = {
    "id": "k4n7q2xw5mz3a6bd",
    "name": "web shop backend",
    "scopes": ["consent:read", "consent:write"],
    "created_at": "2026-11-29T08:00:00Z",
    "revoked_at": None,
    "created_by_key": "p3c2bvq6t7w4y5za",
}


class ApiKey(BaseModel):
    """A key as listed: never its secret."""

    model_config = ConfigDict(json_schema_extra={"examples": [_KEY_EXAMPLE]})

    id: str = Field(description="the key id (the part between `csk_` and the secret)")
    name: str
    scopes: list[Scope]
    created_at: datetime
    revoked_at: datetime | None = Field(description="when it was revoked; null while valid")
    created_by_key: str | None = Field(
        description="id of the key that created it (`dev`: the development key; null: the CLI)"
    )


class CreatedApiKey(ApiKey):
    """A key just created, with the key itself: shown this once, stored only hashed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_KEY_EXAMPLE,
                    "key": "csk_k4n7q2xw5mz3a6bd_pQk9V1d3q8JcX2l0b7ZsY5tW4uR6eA1nM0oI9hG8fD3",
                }
            ]
        }
    )

    key: str = Field(description="the API key to present (Bearer); it cannot be shown again")
