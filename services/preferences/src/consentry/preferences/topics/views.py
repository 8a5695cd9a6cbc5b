"""HTTP routes of communication topics (thin: auth and validation here, rules in the service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from consentry.httpapi.auth import PreferencesAdmin, PreferencesRead
from consentry.preferences.deps import PoolDep, tenant_keys
from consentry.preferences.topics import service
from consentry.preferences.topics.models import TOPIC_PATTERN, TopicIn, TopicList, TopicOut

router = APIRouter(prefix="/v1/topics", tags=["topics"])
TopicName = Annotated[str, Path(pattern=TOPIC_PATTERN, description="e.g. product-news")]


@router.get("", response_model=TopicList)
async def list_topics(principal: PreferencesRead, pool: PoolDep) -> TopicList:
    """The tenant's communication topics."""
    return TopicList(topics=await service.list_topics(pool, tenant_id=principal.tenant_id))


@router.get("/{name}", response_model=TopicOut)
async def get_topic(principal: PreferencesRead, pool: PoolDep, name: TopicName) -> TopicOut:
    """One topic of the tenant."""
    return await service.get_topic(pool, tenant_id=principal.tenant_id, name=name)


@router.put(
    "/{name}",
    response_model=TopicOut,
    responses={
        201: {"model": TopicOut, "description": "created"},
        409: {"description": "`topic-category-fixed`: the topic exists with another category"},
    },
)
async def put_topic(
    request: Request,
    response: Response,
    principal: PreferencesAdmin,
    pool: PoolDep,
    name: TopicName,
    topic: TopicIn,
) -> TopicOut:
    """Create (201) or update (200) a topic; its category cannot change (409)."""
    await tenant_keys(request, principal.tenant_id)  # 503 until the directory brings the tenant
    result, created = await service.put_topic(
        pool, tenant_id=principal.tenant_id, name=name, topic=topic
    )
    if created:
        response.status_code = 201
    return result
