"""HTTP routes of the marketing lists (scope `lists:read`) and the delivery key (`admin`).

The filter reads and validates its body itself (pydantic-core straight from the bytes) and
writes its answer as pre-joined JSON: at 100,000 refs per call FastAPI's generic body and
response handling would cost more than the database.
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from consentry.eventing.db import tenant_transaction
from consentry.httpapi.auth import Admin, ListsRead
from consentry.httpapi.problems import Problem
from consentry.preferences.deps import PoolDep, tenant_keys
from consentry.preferences.lists import service
from consentry.preferences.lists.cache import ListCache
from consentry.preferences.lists.models import (
    MAX_PAGE,
    SUBJECT_REF_PATTERN,
    DeliveryKey,
    FilterIn,
    FilterOut,
    MemberPage,
)
from consentry.preferences.settings import ApiSettings
from consentry.preferences.topics.models import TOPIC_PATTERN, Channel

router = APIRouter(tags=["lists"])
TopicName = Annotated[str, Path(pattern=TOPIC_PATTERN, description="a marketing topic")]
FILTER_PATH = "/v1/lists/{topic}/filter"
_FILTER_IN = TypeAdapter(FilterIn)
_MAX_ERRORS = 20


@router.get("/v1/lists/{topic}/members", response_model=MemberPage)
async def list_members(
    request: Request,
    principal: ListsRead,
    pool: PoolDep,
    topic: TopicName,
    channel: Channel = Channel.EMAIL,
    after: Annotated[
        str | None,
        Query(pattern=SUBJECT_REF_PATTERN, description="the `next` of the previous page"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
) -> MemberPage:
    """The list's sendable members (subscribed, marketing consent given, not suppressed), in
    subject_ref order, `limit` per page; `next` continues. Each member's contact is sealed
    for the tenant's sending system (see GET /v1/delivery-key). Marketing topics only."""
    keys = await tenant_keys(request, principal.tenant_id)
    async with tenant_transaction(pool, principal.tenant_id) as conn:
        return await service.members(
            conn, keys=keys, topic=topic, channel=channel, after=after or "", limit=limit
        )


@router.post(
    FILTER_PATH,
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": FilterIn.model_json_schema()}},
        }
    },
    responses={200: {"model": FilterOut, "description": "the list split in two"}},
)
async def filter_list(
    request: Request, principal: ListsRead, pool: PoolDep, topic: TopicName
) -> Response:
    """Check a proposed send list against the suppression list, list membership and
    marketing consent: `sendable` may be sent to, `suppressed` may not (with the most serious
    reason). Up to CONSENTRY_FILTER_MAX_REFS refs (100,000 by default) per call."""
    body = _parse(await request.body())
    settings: ApiSettings = request.app.state.settings
    if len(body.subject_refs) > settings.filter_max_refs:
        raise Problem(
            422,
            "too-many-refs",
            "Too many subject refs in one call",
            detail=f"at most {settings.filter_max_refs} refs per call; split the list",
            max_refs=settings.filter_max_refs,
        )
    async with tenant_transaction(pool, principal.tenant_id) as conn:
        sendable, refused = await service.filter_refs(
            conn,
            tenant_id=principal.tenant_id,
            topic=topic,
            channel=body.channel,
            refs=body.subject_refs,
            cache=_cache(request, settings),
        )
    # Refs are validated hex and reasons are fixed words: nothing needs JSON escaping.
    content = (
        '{"sendable":['
        + ('"' + '","'.join(sendable) + '"' if sendable else "")
        + '],"suppressed":['
        + ",".join(f'{{"subject_ref":"{ref}","reason":"{why.value}"}}' for ref, why in refused)
        + "]}"
    )
    return Response(content.encode(), media_type="application/json")


def _cache(request: Request, settings: ApiSettings) -> ListCache:
    """The process's list copies (made on first use)."""
    cache: ListCache | None = getattr(request.app.state, "list_cache", None)
    if cache is None:
        cache = request.app.state.list_cache = ListCache(settings.list_cache_max_refs)
    return cache


def _parse(raw: bytes) -> FilterIn:
    try:
        return _FILTER_IN.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors[:_MAX_ERRORS]]
        ) from None


@router.get("/v1/delivery-key", response_model=DeliveryKey)
async def delivery_key(request: Request, principal: Admin) -> DeliveryKey:
    """The key the tenant's sending system opens list contacts with: AES-256-GCM; a contact
    is base64url (no padding) of version byte 0x01 | 12-byte nonce | ciphertext | 16-byte
    tag, with associated data `<tenant_id>/<subject_ref>`. Keep it like a password."""
    keys = await tenant_keys(request, principal.tenant_id)
    return DeliveryKey(
        key_id=keys.delivery_key_id, key=base64.b64encode(keys.delivery_key).decode()
    )
