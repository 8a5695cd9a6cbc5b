"""HTTP routes that make the links a sending system puts into each mail (scope
`preferences:write`). The links themselves are served by `pages` without an API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from consentry.eventing.db import tenant_transaction
from consentry.httpapi.auth import PreferencesWrite
from consentry.preferences.deps import PoolDep, tenant_keys
from consentry.preferences.links import service
from consentry.preferences.links.models import (
    MailHeaders,
    PreferenceLink,
    PreferenceLinkRequest,
    UnsubscribeLinkRequest,
    UnsubscribeLinks,
)
from consentry.preferences.links.tokens import Purpose
from consentry.preferences.settings import ApiSettings

router = APIRouter(prefix="/v1/subjects/{subject_id}", tags=["links"])
SubjectId = Annotated[
    str, Path(min_length=1, max_length=320, description="the tenant's identifier of the person")
]


def _base_url(request: Request) -> str:
    """Where people reach the pages: `public_url`, else this process's own address."""
    settings: ApiSettings = request.app.state.settings
    base = str(settings.public_url) if settings.public_url is not None else str(request.base_url)
    return base.rstrip("/")


@router.post(
    "/unsubscribe-links",
    response_model=UnsubscribeLinks,
    responses={422: {"description": "`unknown-topic` or `topic-not-unsubscribable`"}},
)
async def make_unsubscribe_link(
    request: Request,
    principal: PreferencesWrite,
    pool: PoolDep,
    subject_id: SubjectId,
    body: UnsubscribeLinkRequest | None = None,
) -> UnsubscribeLinks:
    """A one-click unsubscribe link for one marketing topic (or all marketing), the
    `List-Unsubscribe` and `List-Unsubscribe-Post` header values for the mail (RFC 8058),
    and a preference-center link. Transactional topics cannot be unsubscribed from (422)."""
    body = body or UnsubscribeLinkRequest()
    keys = await tenant_keys(request, principal.tenant_id)
    ref = keys.subject_ref(subject_id)
    if body.topic is not None:
        async with tenant_transaction(pool, principal.tenant_id) as conn:
            await service.check_unsubscribable(
                conn, tenant_id=principal.tenant_id, topic=body.topic
            )
    settings: ApiSettings = request.app.state.settings
    token, expires_at = service.issue_link(
        keys,
        purpose=Purpose.UNSUBSCRIBE,
        subject_ref=ref,
        days=settings.unsubscribe_token_days,
        topic=body.topic,
        locale=body.locale,
    )
    center_token, center_expires_at = service.issue_link(
        keys,
        purpose=Purpose.PREFERENCES,
        subject_ref=ref,
        days=settings.preference_token_days,
        locale=body.locale,
    )
    base = _base_url(request)
    url = f"{base}/u/{token}"
    return UnsubscribeLinks(
        url=url,
        preference_center_url=f"{base}/p/{center_token}",
        expires_at=expires_at,
        preference_center_expires_at=center_expires_at,
        headers=MailHeaders(list_unsubscribe=f"<{url}>"),
    )


@router.post("/preference-links", response_model=PreferenceLink)
async def make_preference_link(
    request: Request,
    principal: PreferencesWrite,
    subject_id: SubjectId,
    body: PreferenceLinkRequest | None = None,
) -> PreferenceLink:
    """A preference-center link for the subject (no login; whoever holds it can change the
    subject's preferences until it expires)."""
    body = body or PreferenceLinkRequest()
    keys = await tenant_keys(request, principal.tenant_id)
    settings: ApiSettings = request.app.state.settings
    token, expires_at = service.issue_link(
        keys,
        purpose=Purpose.PREFERENCES,
        subject_ref=keys.subject_ref(subject_id),
        days=settings.preference_token_days,
        locale=body.locale,
    )
    return PreferenceLink(url=f"{_base_url(request)}/p/{token}", expires_at=expires_at)
