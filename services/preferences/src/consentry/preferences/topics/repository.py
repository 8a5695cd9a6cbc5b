"""SQL for topics. Functions receive an open, tenant-scoped connection."""

from __future__ import annotations

import json
from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection
from consentry.preferences.topics.models import TopicIn

_COLUMNS = "name, category, channels, labels, descriptions, created_at, updated_at"
_LIST = f"SELECT {_COLUMNS} FROM topics WHERE tenant_id = $1 ORDER BY name"  # noqa: S608
_GET = f"SELECT {_COLUMNS} FROM topics WHERE tenant_id = $1 AND name = $2"  # noqa: S608
# xmax = 0 only for a row this statement inserted: tells created from updated.
_UPSERT = f"""
INSERT INTO topics (tenant_id, name, category, channels, labels, descriptions)
VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)
ON CONFLICT (tenant_id, name) DO UPDATE
SET channels = EXCLUDED.channels, labels = EXCLUDED.labels,
    descriptions = EXCLUDED.descriptions, updated_at = now()
WHERE topics.category = EXCLUDED.category
RETURNING {_COLUMNS}, (xmax = 0) AS created
"""  # noqa: S608 - a constant column list


def decode(row: asyncpg.Record) -> dict[str, object]:
    """A topic row as the fields of TopicOut."""
    values = dict(row)
    values.pop("created", None)
    for column in ("labels", "descriptions"):
        if isinstance(values[column], str):
            values[column] = json.loads(values[column])
    return values


async def list_topics(conn: Connection, *, tenant_id: UUID) -> list[asyncpg.Record]:
    """Every topic of the tenant, by name."""
    return list(await conn.fetch(_LIST, tenant_id))


async def get_topic(conn: Connection, *, tenant_id: UUID, name: str) -> asyncpg.Record | None:
    """One topic, or None."""
    return await conn.fetchrow(_GET, tenant_id, name)


async def upsert(
    conn: Connection, *, tenant_id: UUID, name: str, topic: TopicIn
) -> asyncpg.Record | None:
    """Create or update the topic; None when it exists with another category."""
    return await conn.fetchrow(
        _UPSERT,
        tenant_id,
        name,
        topic.category.value,
        [channel.value for channel in topic.channels],
        json.dumps(topic.labels),
        json.dumps(topic.descriptions),
    )
