"""The public pages behind the links: one-click unsubscribe (RFC 8058) and the preference
center. No API key, no login, no cookie, no JavaScript: the signed token in the path is the
only credential (see `tokens`).

- `GET /u/{token}` asks for confirmation and changes nothing (mail scanners prefetch links);
  its form posts the RFC 8058 body.
- `POST /u/{token}` with `List-Unsubscribe=One-Click` (form-urlencoded or multipart, as
  mailbox providers send it) unsubscribes; a replay changes nothing and answers the same.
- `GET /p/{token}` shows topics and consents; `POST /p/{token}` applies the form and
  redirects (303) to `GET /p/{token}?saved=1` (post/redirect/get).

Errors are HTML pages with the right status, in the page's language; a client that asks for
JSON (`Accept: application/json`) gets the problem document instead. Links inside the pages
are relative, so the pages work under any public base path. Nothing here logs a token or a
subject reference (the request log records the route template only).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from consentry.eventing.db import Pool, tenant_transaction
from consentry.eventing.envelope import utcnow
from consentry.httpapi.problems import Problem, problem_response
from consentry.preferences.links import service, tokens
from consentry.preferences.links.i18n import LANGUAGES, MESSAGES, Translator, choose_language
from consentry.preferences.links.models import ONE_CLICK
from consentry.preferences.settings import ApiSettings
from consentry.preferences.subjects.models import Method
from consentry.preferences.tenants import TenantKeyring, TenantKeys
from consentry.preferences.topics.models import TOPIC_PATTERN, Category, Channel, TopicOut
from consentry.preferences.topics.service import topics_by_name

router = APIRouter(tags=["pages"])

_env = Environment(
    loader=PackageLoader("consentry.preferences.links", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
CSS = resources.files("consentry.preferences.links").joinpath("templates/pages.css").read_text()
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
# No script at all; the one inline style block by its hash; forms post only to this origin.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
_MAX_FIELDS = 400  # far more than any tenant's topics x channels + consents
LangQuery = Annotated[str | None, Query(max_length=5, description="en or sv")]
_UNSUBSCRIBE_ALL = "unsubscribe-all"
_NAME = re.compile(TOPIC_PATTERN)  # topic and purpose names share the pattern
_CHANNELS = frozenset(channel.value for channel in Channel)


def _headers(lang: str | None = None) -> dict[str, str]:
    return {**SECURITY_HEADERS, "Content-Language": lang} if lang else dict(SECURITY_HEADERS)


def _render(lang: str, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    t = Translator(lang)
    html = _env.get_template(template).render(
        lang=lang,
        t=t,
        css=CSS,
        other_languages=[
            (code, MESSAGES[code]["language_name"]) for code in LANGUAGES if code != lang
        ],
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=_headers(lang))


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "json" in accept and "text/html" not in accept


def _error(request: Request, lang: str, status: int, slug: str, key: str, title: str) -> Response:
    """An error page (or, for a client that asks for JSON, a problem document)."""
    if _wants_json(request):
        response = problem_response(request, status, slug, title)
        response.headers.update(SECURITY_HEADERS)
        return response
    t = Translator(lang)
    return _render(
        lang,
        "error.html",
        status=status,
        title=t(f"{key}_title"),
        text=t(f"{key}_text"),
        tenant=None,
    )


def _link_error(request: Request, error: tokens.LinkError, lang: str | None) -> Response:
    language = choose_language(lang, None, request.headers)
    if isinstance(error, tokens.ExpiredLink):
        return _error(request, language, 410, "link-expired", "expired", "The link has expired")
    return _error(request, language, 404, "invalid-link", "invalid", "The link is not valid")


async def _open(
    request: Request, token: str, purpose: tokens.Purpose
) -> tuple[tokens.LinkClaims, TenantKeys]:
    """The verified claims of `token` and its tenant's keys; raises tokens.LinkError."""
    tenant_id = tokens.claimed_tenant(token)
    keyring: TenantKeyring = request.app.state.keyring
    keys = await keyring.get(tenant_id)
    if keys is None:  # not provisioned here: indistinguishable from a forgery
        raise tokens.InvalidLink("unknown tenant")
    return tokens.verify(keys.link_key, token, purpose=purpose, now=utcnow()), keys


def _pool(request: Request) -> Pool:
    pool: Pool = request.app.state.pool
    return pool


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def _self(token: str, lang: str | None, **query: str) -> str:
    """The page's own address relative to itself (the last path segment is the token)."""
    params = {**query, **({"lang": lang} if lang in LANGUAGES else {})}
    return f"{token}?{urlencode(params)}" if params else token


def _manage_url(request: Request, keys: TenantKeys, subject_ref: str, lang: str) -> str:
    """A fresh preference-center link (relative to a `/u/` page): a genuine unsubscribe link
    also opens the preference center of the same subject."""
    token, _ = service.issue_link(
        keys,
        purpose=tokens.Purpose.PREFERENCES,
        subject_ref=subject_ref,
        days=_settings(request).preference_token_days,
        locale=lang,
    )
    return f"../p/{token}"


async def _form(request: Request) -> FormData | None:
    """The posted form (urlencoded or multipart, no files), or None when it is unreadable."""
    try:
        async with request.form(max_files=0, max_fields=_MAX_FIELDS) as form:
            return form
    except HTTPException:  # malformed multipart, too many fields, a file
        return None


async def _topic_label(pool: Pool, keys: TenantKeys, topic: str | None, lang: str) -> str | None:
    if topic is None:
        return None
    async with tenant_transaction(pool, keys.tenant_id) as conn:
        topics = await topics_by_name(conn, tenant_id=keys.tenant_id)
    found = topics.get(topic)
    return topic if found is None else found.label(lang)


# The pages' error answers (an HTML page for browsers, problem+json for API clients).
_LINK_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "`invalid-link`: forged, altered or of another tenant or purpose"},
    410: {"description": "`link-expired`: the link's time is over"},
}


@router.get(
    "/u/{token}",
    response_class=HTMLResponse,
    summary="Unsubscribe: confirm",
    responses=_LINK_ERRORS,
)
async def confirm_unsubscribe(request: Request, token: str, lang: LangQuery = None) -> Response:
    """A page that explains what stops and asks to confirm; GET itself changes nothing."""
    try:
        claims, keys = await _open(request, token, tokens.Purpose.UNSUBSCRIBE)
    except tokens.LinkError as error:
        return _link_error(request, error, lang)
    language = choose_language(lang, claims.locale, request.headers)
    return _render(
        language,
        "unsubscribe.html",
        title=Translator(language)("unsubscribe_title"),
        tenant=keys.name,
        topic=await _topic_label(_pool(request), keys, claims.topic, language),
        action=_self(token, lang),
        manage_url=_manage_url(request, keys, claims.subject_ref, language),
    )


@router.post(
    "/u/{token}",
    response_class=HTMLResponse,
    summary="Unsubscribe: one click",
    responses={
        **_LINK_ERRORS,
        400: {"description": "`one-click-body-required`: not `List-Unsubscribe=One-Click`"},
    },
)
async def one_click_unsubscribe(request: Request, token: str, lang: LangQuery = None) -> Response:
    """RFC 8058 one-click unsubscribe: the body must be `List-Unsubscribe=One-Click`
    (form-urlencoded or multipart/form-data). Idempotent: a replay answers the same."""
    try:
        claims, keys = await _open(request, token, tokens.Purpose.UNSUBSCRIBE)
    except tokens.LinkError as error:
        return _link_error(request, error, lang)
    language = choose_language(lang, claims.locale, request.headers)
    form = await _form(request)
    name, _, value = ONE_CLICK.partition("=")
    if form is None or form.get(name) != value:
        return _error(
            request,
            language,
            400,
            "one-click-body-required",
            "bad_request",
            "The body must be List-Unsubscribe=One-Click",
        )
    pool = _pool(request)
    async with tenant_transaction(pool, keys.tenant_id) as conn:
        await service.unsubscribe(
            conn,
            tenant_id=keys.tenant_id,
            subject_ref=claims.subject_ref,
            topic=claims.topic,
            method=Method.ONE_CLICK,
        )
    return _render(
        language,
        "unsubscribed.html",
        title=Translator(language)("unsubscribed_title"),
        tenant=keys.name,
        topic=await _topic_label(pool, keys, claims.topic, language),
        manage_url=_manage_url(request, keys, claims.subject_ref, language),
    )


def _topic_items(
    center: service.Center, t: Translator, lang: str, wanted: frozenset[tuple[str, str]]
) -> list[dict[str, Any]]:
    """The topics as the template shows them: marketing first, then transactional."""
    states = {state.topic: state for state in center.view.topics}
    ordered = sorted(
        center.topics.values(),
        key=lambda topic: (topic.category is Category.TRANSACTIONAL, topic.label(lang).lower()),
    )
    items = []
    for topic in ordered:
        transactional = topic.category is Category.TRANSACTIONAL
        state = states[topic.name]
        choices = []
        for channel in topic.channels:
            current = transactional or state.channels.get(channel, False)
            choices.append(
                {
                    "id": f"t-{topic.name}.{channel.value}",
                    "value": f"{topic.name}:{channel.value}",
                    "label": t(f"channel_{channel.value}"),
                    "checked": current or (topic.name, channel.value) in wanted,
                    "shown": f"{topic.name}:{channel.value}:{int(current)}",
                }
            )
        items.append(
            {
                "id": f"topic-{topic.name}",
                "label": topic.label(lang),
                "description": topic.description(lang),
                "kind": t("transactional_topic" if transactional else "marketing_topic"),
                "transactional": transactional,
                "choices": choices,
            }
        )
    return items


def _consent_items(
    center: service.Center, t: Translator, requested: Mapping[str, bool]
) -> list[dict[str, Any]]:
    items = []
    for consent in center.consents:
        # A decision just sent to the consent service shows as made (it arrives shortly).
        given = requested.get(consent.purpose, consent.given) is True
        key = f"purpose_{consent.purpose}"
        always_on = consent.purpose in service.ALWAYS_ON_PURPOSES
        items.append(
            {
                "id": f"c-{consent.purpose}",
                "purpose": consent.purpose,
                "label": t(key) if t.has(key) else consent.purpose,
                "checked": given,
                "editable": consent.editable,
                "shown": f"{consent.purpose}:{int(given)}",
                "note": t("consent_required_purpose") if always_on else None,
            }
        )
    return items


def _render_center(
    lang: str,
    keys: TenantKeys,
    center: service.Center,
    *,
    action: str,
    status: int = 200,
    notices: Iterable[Markup] = (),
    errors: Iterable[Markup] = (),
    wanted: frozenset[tuple[str, str]] = frozenset(),
    requested: Mapping[str, bool] | None = None,
) -> HTMLResponse:
    t = Translator(lang)
    requested = requested or {}
    marketing = any(topic.category is Category.MARKETING for topic in center.topics.values())
    consent = requested.get(service.MARKETING_PURPOSE, center.view.marketing_consent)
    return _render(
        lang,
        "preferences.html",
        status=status,
        title=t("preferences_title"),
        tenant=keys.name,
        action=action,
        notices=list(notices),
        errors=list(errors),
        topics=_topic_items(center, t, lang, wanted),
        consents=_consent_items(center, t, requested),
        consents_read_only=center.policy_version is None,
        all_unsubscribed=center.view.all_marketing_unsubscribed,
        consent_needed=marketing and consent is not True,
    )


@router.get(
    "/p/{token}",
    response_class=HTMLResponse,
    summary="The preference center",
    responses=_LINK_ERRORS,
)
async def preference_center(
    request: Request,
    token: str,
    lang: LangQuery = None,
    saved: Annotated[bool, Query()] = False,
    consent: Annotated[bool, Query()] = False,
) -> Response:
    """The subject's topics (marketing per channel; transactional always on) and consents."""
    try:
        claims, keys = await _open(request, token, tokens.Purpose.PREFERENCES)
    except tokens.LinkError as error:
        return _link_error(request, error, lang)
    language = choose_language(lang, claims.locale, request.headers)
    t = Translator(language)
    async with tenant_transaction(_pool(request), keys.tenant_id) as conn:
        center = await service.load_center(
            conn, tenant_id=keys.tenant_id, subject_ref=claims.subject_ref
        )
    notices = [t("saved")] if saved else []
    if saved and consent:
        notices.append(t("saved_consent"))
    return _render_center(language, keys, center, action=_self(token, lang), notices=notices)


class _BadFormError(ValueError):
    pass


def _pairs(values: Iterable[str], parts: int) -> list[list[str]]:
    found = []
    for value in values:
        fields = value.split(":")
        if len(fields) != parts:
            raise _BadFormError(value)
        found.append(fields)
    return found


def _submission(form: FormData) -> service.Submission:
    """The form's boxes, checked for shape (raises _BadFormError)."""

    def strings(name: str) -> list[str]:
        values = form.getlist(name)
        if not all(isinstance(value, str) for value in values):
            raise _BadFormError(name)
        return [str(value) for value in values]

    def topic(name: str) -> str:
        if not _NAME.fullmatch(name):
            raise _BadFormError(name)
        return name

    def channel(name: str) -> str:
        if name not in _CHANNELS:
            raise _BadFormError(name)
        return name

    def flag(value: str) -> bool:
        if value not in ("0", "1"):
            raise _BadFormError(value)
        return value == "1"

    shown = {(topic(n), channel(c)): flag(f) for n, c, f in _pairs(strings("shown"), 3)}
    ticked = frozenset((topic(n), channel(c)) for n, c in _pairs(strings("subscribe"), 2))
    consents_shown = {topic(p): flag(f) for p, f in _pairs(strings("consent_shown"), 2)}
    consents_ticked = frozenset(topic(p) for p in strings("consent"))
    return service.Submission(
        shown=shown,
        ticked=ticked,
        consents_shown=consents_shown,
        consents_ticked=consents_ticked,
    )


def _labels(topics: Mapping[str, TopicOut], names: Iterable[str], lang: str) -> str:
    return ", ".join(topics[name].label(lang) if name in topics else name for name in names)


@router.post(
    "/p/{token}",
    response_class=HTMLResponse,
    summary="The preference center: save",
    responses={**_LINK_ERRORS, 400: {"description": "`bad-form`: the form is not valid"}},
)
async def save_preferences(request: Request, token: str, lang: LangQuery = None) -> Response:
    """Apply the form (or "unsubscribe from all marketing") and redirect (303) to the page."""
    try:
        claims, keys = await _open(request, token, tokens.Purpose.PREFERENCES)
    except tokens.LinkError as error:
        return _link_error(request, error, lang)
    language = choose_language(lang, claims.locale, request.headers)
    t = Translator(language)
    form = await _form(request)
    try:
        if form is None:
            raise _BadFormError("unreadable")
        submission = _submission(form)
    except _BadFormError:
        return _error(request, language, 400, "bad-form", "bad_request", "The form is not valid")
    tenant_id, ref, pool = keys.tenant_id, claims.subject_ref, _pool(request)
    action = _self(token, lang)
    saved = {"saved": "1"}
    try:
        async with tenant_transaction(pool, tenant_id) as conn:
            if form.get("action") == _UNSUBSCRIBE_ALL:
                await service.unsubscribe(
                    conn,
                    tenant_id=tenant_id,
                    subject_ref=ref,
                    topic=None,
                    method=Method.PREFERENCE_CENTER,
                )
                applied = service.Applied(changed=True)
            else:
                applied = await service.apply(
                    conn, tenant_id=tenant_id, subject_ref=ref, submission=submission
                )
            center = await service.load_center(conn, tenant_id=tenant_id, subject_ref=ref)
    except Problem:  # a stale or altered form: nothing was applied
        async with tenant_transaction(pool, tenant_id) as conn:
            center = await service.load_center(conn, tenant_id=tenant_id, subject_ref=ref)
        return _render_center(
            language, keys, center, action=action, status=409, errors=[t("error_stale")]
        )
    if not applied.awaiting_consent:
        if applied.consent_requested:
            saved["consent"] = "1"
        return RedirectResponse(_self(token, lang, **saved), status_code=303, headers=_headers())
    # Joining marketing waits for the marketing-email consent; everything else is saved.
    topics = _labels(center.topics, applied.awaiting_consent, language)
    wanted = frozenset(
        (change.topic, change.channel.value)
        for change in submission.changes()
        if change.subscribed and change.channel is not None
    )
    others = [t("other_changes_saved")] if applied.changed or applied.consent_requested else []
    if applied.consent_requested.get(service.MARKETING_PURPOSE) is True:
        return _render_center(
            language,
            keys,
            center,
            action=action,
            wanted=wanted,
            requested=applied.consent_requested,
            notices=[t("consent_pending", topics=topics), *others],
        )
    return _render_center(
        language,
        keys,
        center,
        action=action,
        status=409,
        wanted=wanted,
        requested=applied.consent_requested,
        errors=[t("error_consent_required", topics=topics), *others],
    )
