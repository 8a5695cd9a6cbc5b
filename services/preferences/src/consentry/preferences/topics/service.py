"""Topic rules: a topic's category is fixed once created (a marketing topic turned
transactional would reach people who left it)."""

from __future__ import annotations

from uuid import UUID

from consentry.eventing.db import Connection, Pool, tenant_transaction
from consentry.httpapi.problems import Problem
from consentry.preferences.topics import repository
from consentry.preferences.topics.models import TopicIn, TopicOut


async def topics_by_name(conn: Connection, *, tenant_id: UUID) -> dict[str, TopicOut]:
    """The tenant's topics by name, on an open tenant-scoped connection."""
    rows = await repository.list_topics(conn, tenant_id=tenant_id)
    return {row["name"]: TopicOut.model_validate(repository.decode(row)) for row in rows}


async def list_topics(pool: Pool, *, tenant_id: UUID) -> list[TopicOut]:
    """Every topic of the tenant."""
    async with tenant_transaction(pool, tenant_id) as conn:
        return list((await topics_by_name(conn, tenant_id=tenant_id)).values())


async def get_topic(pool: Pool, *, tenant_id: UUID, name: str) -> TopicOut:
    """One topic; 404 when the tenant has none by that name."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repository.get_topic(conn, tenant_id=tenant_id, name=name)
    if row is None:
        raise Problem(404, "topic-not-found", "No such topic", topic=name)
    return TopicOut.model_validate(repository.decode(row))


async def put_topic(
    pool: Pool, *, tenant_id: UUID, name: str, topic: TopicIn
) -> tuple[TopicOut, bool]:
    """Create or update a topic; returns it and whether it was created. 409 on a category change."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repository.upsert(conn, tenant_id=tenant_id, name=name, topic=topic)
    if row is None:
        raise Problem(
            409,
            "topic-category-fixed",
            "A topic's category cannot change",
            detail=f"{name} exists with another category; create a new topic instead",
            topic=name,
        )
    return TopicOut.model_validate(repository.decode(row)), bool(row["created"])
